"""Benchmarks. Run all with ``python -m bench.run``; see bench/README.md."""
