"""The containers benchmark (bench/bench_containers.py) runs through the benchmark runner with tiny sizes on
a private Docker engine of its own, and reports each row with every metric, in its table and its JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from bench import bench_containers
from bench import run as bench_run

pytestmark = pytest.mark.containers

TINY = bench_containers.Sizes(start=2, jobs=2, rounds=1, log_jobs=1, log_lines=3)


def test_the_containers_benchmark_reports_start_throughput_and_log_latency(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """On Docker: Podman's rows come from the same code with the other engine's setup (a smoke test of the
    bench's own code, kept short; the benchmark itself runs both)."""
    kind = "docker"
    monkeypatch.setattr(bench_containers, "QUICK", TINY)
    monkeypatch.setattr(bench_containers, "MEASUREMENTS", {kind: bench_containers.MEASUREMENTS[kind]})
    argv = ["--only", "containers", "--quick", "--backend", "sqlite", "--out", str(tmp_path)]
    assert bench_run.main(argv) == 0
    assert "labcloud benchmarks" in capsys.readouterr().out
    report = json.loads((tmp_path / "latest.json").read_text())
    rows = {row["benchmark"]: row for row in report["results"]}
    wanted = {
        f"containers: {kind} submit -> running": {
            f"{kind}_start_p50_ms", f"{kind}_start_p90_ms", f"{kind}_run_p50_ms", "lc_start_p50_ms",
            "lc_start_p90_ms", "lc_running_p50_ms", "lc_done_p50_ms", "ratio_start", "ratio_done",
            "lc_dispatch_p50_ms", "lc_staging_p50_ms", "lc_launch_p50_ms", "lc_ending_p50_ms",
        },
        f"containers: {kind} trivial jobs/s": {"labcloud_jobs_per_s", f"{kind}_jobs_per_s", "ratio"},
        f"containers: {kind} log -> browser": {
            "p50_ms", "p90_ms", "to_file_p50_ms", "file_to_sse_p50_ms", f"{kind}_p50_ms",
        },
    }  # fmt: skip
    for name, metrics in wanted.items():
        row = rows[name]
        assert not row["notes"].startswith("FAILED"), row["notes"]
        assert metrics <= row["metrics"].keys(), (name, row["metrics"])
        assert all(value > 0 for key, value in row["metrics"].items() if key in metrics), row
    start = rows[f"containers: {kind} submit -> running"]["metrics"]
    assert start["n"] == TINY.start
    # submit -> the command ran comes before -> finished, and so does the engine's own
    assert start["lc_start_p50_ms"] < start["lc_done_p50_ms"]
    assert start[f"{kind}_start_p50_ms"] < start[f"{kind}_run_p50_ms"]
    assert rows[f"containers: {kind} log -> browser"]["metrics"]["lines"] == TINY.log_lines
