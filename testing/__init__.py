"""Real daemons for the tests and the benchmarks: SeaweedFS (:mod:`.seaweed`), a single-node Slurm cluster
(:mod:`.slurm`), and what starting them on free ports takes (:mod:`.daemons`).

Both suites import this package from the repository root (pytest's ``pythonpath``; ``python -m bench.run``
runs there). It is not part of the installed ``labcloud``: these recipes need root, Debian packages and the
test extra, and no installation runs them.
"""
