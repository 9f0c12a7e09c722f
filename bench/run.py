"""Run every benchmark, print one table and write JSON to bench/results/.

python -m bench.run [--backend sqlite --backend postgresql] [--only NAME] [--quick]
python -m bench.run --compare [RESULTS.json]   the performance targets beside one run's numbers
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

from bench import (
    bench_containers,
    bench_devices,
    bench_engines,
    bench_files,
    bench_jobs,
    bench_me,
    bench_path,
    bench_sweeps,
    bench_trust,
    bench_web,
    bench_workers,
    compare,
)
from bench.harness import Result

BENCHMARKS: dict[str, Callable[[list[str], bool], list[Result]]] = {
    "me": bench_me.run,
    "jobs": bench_jobs.run,
    "quota": bench_jobs.run_quota,
    "files": bench_files.run,
    "web": bench_web.run,
    "workers": bench_workers.run,
    "engines": bench_engines.run,
    "trust": bench_trust.run,
    "path": bench_path.run,
    "containers": bench_containers.run,
    "devices": bench_devices.run,
    "sweeps": bench_sweeps.run,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--backend", action="append", choices=["sqlite", "postgresql"])
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS))
    parser.add_argument("--quick", action="store_true", help="fewer requests: a smoke run, not for quoting")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    parser.add_argument(
        "--compare",
        nargs="?",
        const="",
        metavar="RESULTS.json",
        help="run what the table of performance targets needs and print it (or print it from a results file)",
    )
    args = parser.parse_args(argv)
    backends = args.backend or ["sqlite", "postgresql"]
    if args.compare:
        compare.show(json.loads(Path(args.compare).read_text())["results"], backends)
        return 0
    if args.compare is not None:
        args.only = args.only or list(compare.BENCHMARKS)
        os.environ.setdefault("LABCLOUD_BENCH_JOBS", compare.JOBS_MEASUREMENTS)
    results: list[Result] = []
    for name in args.only or list(BENCHMARKS):
        results += BENCHMARKS[name](backends, args.quick)

    table = Table(title="labcloud benchmarks")
    for col in ("benchmark", "backend", "metrics", "target", "notes"):
        table.add_column(col)
    for r in results:
        metrics = "  ".join(f"{k}={v:g}" for k, v in r.metrics.items())
        table.add_row(r.benchmark, r.backend, metrics, r.target, r.notes)
    Console(width=160).print(table)

    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report = {
        "when": stamp,
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": _cpus()},
        "quick": args.quick,
        "results": [asdict(r) for r in results],
    }
    path = args.out / f"bench-{stamp}.json"
    path.write_text(json.dumps(report, indent=2))
    (args.out / "latest.json").write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    if args.compare is not None:
        compare.show(report["results"], backends)
    return 0


def _cpus() -> int:
    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
