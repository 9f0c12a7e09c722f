"""The layering rule of a local job's path (bench/bench_path.py): every call back up the layers is the
runner's reporter reporting, or one of the few climbs the bench names and explains."""

from __future__ import annotations

import builtins
from typing import Any

import pytest
from bench import bench_path
from bench.bench_path import Call, Climb, Segment, analyse, layering_breaks, measure_local

from labcloud.execution import runner

RUNNER = "labcloud.execution.runner"
REPORTER = "labcloud.execution.db_reporter"


def test_a_local_job_climbs_only_through_its_reporter() -> None:
    [[path]] = measure_local(runs=1)
    assert [what for what, _ in path.segments] == [
        "POST /api/v1/jobs",
        "dispatch: Scheduler.step",
        "job thread",
    ]
    reporting = {str(c) for c in path.climbs if c.caller == REPORTER}
    assert "execution.db_reporter -> services.lifecycle (record_end)" in reporting
    breaks = [str(c) for c in layering_breaks(path)]
    assert not breaks, f"climbs outside the rule: {breaks}"


def test_a_call_from_the_runner_up_into_the_runtime_breaks_the_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same job, with the runner calling a function of labcloud.runtime whenever it writes its log."""
    probe = _function("labcloud.runtime", "def probe():\n    return None\n", "probe")
    original = runner.append_log
    append_log = _function(
        RUNNER,
        "def append_log(plan, line):\n    probe()\n    return original(plan, line)\n",
        "append_log",
        probe=probe,
        original=original,
    )
    monkeypatch.setattr(runner, "append_log", append_log)
    [[path]] = measure_local(runs=1)
    assert Climb(RUNNER, "labcloud.runtime", "probe") in layering_breaks(path)


def _function(module: str, source: str, name: str, **names: Any) -> Any:
    """A function whose code belongs, for the profiler, to ``module``."""
    namespace: dict[str, Any] = {"__name__": module, "__builtins__": builtins, **names}
    exec(source, namespace)
    return namespace[name]


def _segment(*calls: tuple[str, str, tuple[tuple[str, bool], ...]]) -> Segment:
    segment = Segment(0, "server", "job thread", keep=True)
    segment.calls = [Call(i, unit, func, callers) for i, (unit, func, callers) in enumerate(calls)]
    return segment


def test_what_counts_as_a_climb() -> None:
    local = bench_path.LOCAL_PY
    path = analyse(
        "local",
        [
            _segment(
                (RUNNER, "run", ()),
                # the reporter, called by the runner, writes to a service: the runner reporting
                (REPORTER, "DatabaseReporter.finish", ((RUNNER, True),)),
                ("labcloud.services.lifecycle", "record_end", ((REPORTER, True), (RUNNER, True))),
                # SQLAlchemy converting a column on the reporter's behalf: a stop, not a climb
                ("labcloud.services.executor_refs", "parse", ((REPORTER, False), (RUNNER, True))),
                # the runner calling the executor that runs it: a climb that breaks the rule
                (local, "LocalExecutor.cancel_flag", ((RUNNER, True),)),
                # through a support module (the database): looked through
                ("labcloud.db.engine", "Database.session", ((RUNNER, True),)),
                ("labcloud.runtime", "Runtime.notify", (("labcloud.db.engine", True), (RUNNER, True))),
            )
        ],
    )
    assert [str(c) for c in path.climbs] == [
        "execution.db_reporter -> services.lifecycle (record_end)",
        "execution.runner -> execution.executors.local (LocalExecutor.cancel_flag)",
        "execution.runner -> runtime (Runtime.notify)",
    ]
    assert layering_breaks(path) == path.climbs[1:]
    assert path.stops == 6  # every call but the support one, each entering another unit
    assert path.local_py == 1  # the executor's cancel flag
