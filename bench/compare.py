"""The performance table: each target of the performance work beside what one run measured, on SQLite and
PostgreSQL, with the machine's noise of that run.

python -m bench.run --compare            runs what the table needs, then prints it
python -m bench.run --compare FILE.json  prints it from an earlier run's results

Ratios (labcloud against ``cp`` + ``sync``, raw ``sbatch``, a plain Celery task) are always of the same run:
the benchmarks measure both sides alternately, so a busy machine moves both.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

# What the table needs, by benchmark (``--only``) and the measurements of bench_jobs to pick.
BENCHMARKS = ("jobs", "workers", "files", "engines", "sweeps")
JOBS_MEASUREMENTS = "submit,list-queued,list,dispatch,end-to-end,mixed"

Metrics = dict[str, float]


@dataclass(frozen=True)
class Row:
    what: str
    result: str  # the start of the result's name
    show: Callable[[Metrics], str]  # what the row shows of its metrics
    met: Callable[[Metrics], bool]  # whether they meet the target
    target: str


def _f(key: str, unit: str = "", digits: int = 1) -> Callable[[Metrics], str]:
    return lambda m: f"{m[key]:.{digits}f}{unit}"


ROWS = (
    Row(
        "submit p50, 1 client",
        "jobs: submit latency",
        _f("p50_ms", " ms"),
        lambda m: m["p50_ms"] <= 2,
        "≤ 2 ms SQLite, ≤ 3 ms PG",
    ),
    Row(
        "newest 100 of 1,000 queued, vs the same page ended",
        "jobs: GET /api/v1/jobs?limit=100, queued vs ended",
        lambda m: f"{m['queued_p50_ms']:.1f} vs {m['ended_p50_ms']:.1f} ms",
        lambda m: m["queued_p50_ms"] <= m["ended_p50_ms"] * 1.05,
        "queued ≤ ended",
    ),
    Row(
        "newest 50 of 1,000,000",
        "jobs: GET /api/v1/jobs?limit=50",
        _f("first_page_p50_ms", " ms"),
        lambda m: m["first_page_p50_ms"] <= 5,
        "≤ 5 ms p50",
    ),
    Row(
        "claim p50, 1,000 queued, 1 claimer",
        "workers: claim latency (1 claimer)",
        _f("p50_ms", " ms"),
        lambda m: m["p50_ms"] <= 3,
        "≤ 3 ms",
    ),
    Row(
        "claims, 100,000 queued, 16 claimers",
        "workers: claim latency (16 claimers)",
        lambda m: f"{m['p50_ms']:.0f} ms, {m.get('claims_per_s', 0):.0f}/s",
        lambda m: m["p50_ms"] <= 15 and m.get("claims_per_s", 0) >= 300,
        "≤ 15 ms, ≥ 300/s",
    ),
    Row(
        "trivial jobs/s end to end, local",
        "jobs: end-to-end trivial jobs",
        _f("jobs_per_s", "/s"),
        lambda m: m["jobs_per_s"] >= 100,
        "≥ 100/s",
    ),
    Row(
        "queued → running, local, idle",
        "jobs: dispatch latency",
        lambda m: f"{m['queued_to_staging_p50_ms'] + m['staging_to_running_p50_ms']:.0f} ms",
        lambda m: m["queued_to_staging_p50_ms"] + m["staging_to_running_p50_ms"] <= 15,
        "≤ 15 ms",
    ),
    Row(
        "trivial jobs/s, 4 pull workers",
        "workers: trivial jobs through 4 workers",
        _f("jobs_per_s", "/s"),
        lambda m: m["jobs_per_s"] >= 60,
        "≥ 60/s",
    ),
    Row(
        "upload 1 GiB raw PUT / cp+sync",
        "files: PUT 1 GiB",
        _f("ratio", "", 2),
        lambda m: m["ratio"] >= 0.8,
        "≥ 0.8",
    ),
    Row(
        "16 clients, 70% submit / 30% list, 30 s",
        "jobs: 16 clients",
        lambda m: (
            f"{m['requests_per_s']:.0f} req/s, list p99 {m['list_p99_ms']:.0f} ms, {m['errors']:.0f} errors"
        ),
        lambda m: m["requests_per_s"] >= 400 and m["list_p99_ms"] <= 100 and m["errors"] == 0,
        "≥ 400 req/s, p99 ≤ 100 ms, 0 errors",
    ),
    Row(
        "Celery trivial jobs / plain task",
        "engines: celery trivial jobs/s",
        _f("ratio", "", 2),
        lambda m: m["ratio"] >= 0.5,
        "≥ 0.5",
    ),
    Row(
        "Slurm trivial jobs / raw sbatch",
        "engines: slurm trivial jobs/s",
        _f("ratio", "", 2),
        lambda m: m["ratio"] >= 0.9,
        "≥ 0.9",
    ),
    Row(
        "Slurm sweep (job arrays) / raw sbatch --array",
        "engines: slurm sweep jobs/s",
        lambda m: f"{m['ratio']:.2f} ({m['vs_raw_sbatch_each']:.2f} of single sbatch calls)",
        lambda m: m["ratio"] >= 0.9,
        "≥ 0.9",
    ),
    Row(
        "1,000 trivial jobs as one sweep",
        "sweeps: 1,000 trivial jobs as one sweep",
        lambda m: f"{m['all_succeeded_s']:.1f} s ({m['cpu_ms_per_job']:.0f} ms CPU a job)",
        lambda m: m["all_succeeded_s"] < 15 and m["succeeded"] == m["jobs"],
        "< 15 s",
    ),
)


def _found(results: list[dict[str, Any]], row: Row, backend: str) -> Metrics | None:
    for r in results:
        if r["benchmark"].startswith(row.result) and r["backend"] == backend and r["metrics"]:
            return dict(r["metrics"])
    return None


def _cell(metrics: Metrics | None, row: Row) -> str:
    if metrics is None:
        return "[dim]not measured[/dim]"
    try:
        shown = row.show(metrics)
        met = row.met(metrics)
    except KeyError as exc:
        return f"[dim]no {exc.args[0]}[/dim]"
    noise = metrics.get("other_cpu_pct")
    extra = f" [dim](others {noise:.0f}%)[/dim]" if noise is not None else ""
    return f"{'[green]✓[/green]' if met else '[red]✗[/red]'} {shown}{extra}"


def table(results: list[dict[str, Any]], backends: list[str]) -> Table:
    out = Table(title="labcloud against its performance targets (one run)")
    out.add_column("what")
    for backend in backends:
        out.add_column("SQLite" if backend == "sqlite" else "PostgreSQL")
    out.add_column("target")
    for row in ROWS:
        out.add_row(row.what, *(_cell(_found(results, row, b), row) for b in backends), row.target)
    return out


def show(results: list[dict[str, Any]], backends: list[str]) -> None:
    Console(width=180).print(table(results, backends))
    print("others: CPU used outside the benchmark's own processes meanwhile, in % of one core")
