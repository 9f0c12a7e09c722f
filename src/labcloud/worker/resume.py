"""A restarted worker takes up the attempts its earlier process left running, instead of stopping them.

A worker killed mid-job (``kill -9``, a crash) leaves its jobs' supervisors running: they are detached from
it. Right before an attempt's command starts, the worker writes down in the attempt's folder what it needs to
report on it later (:mod:`labcloud.worker.record`). The next worker process on the same work dir reads it
back, asks the server whether that attempt is still the job's current one and this worker's (a job
heartbeat with the job token, which also renews its lease; a stale attempt is fenced with 409), and if so
follows it to its end through the runner's resume path (:class:`ResumedRun`): outputs, usage and end are
reported as if nothing happened. Everything else it stops, as before
(:func:`labcloud.worker.workdir.clean_leftovers`).

Then it sweeps its container engine (:func:`sweep`): containers labcloud started (named and labelled after
job and attempt) go when they belong to an attempt of this worker's folder that it stopped, or when the
server says their attempt is over. Containers of attempts still running anywhere are left alone: several
workers (and a server) may share one engine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labcloud.execution import container_run, runner
from labcloud.execution.containers import Engine
from labcloud.worker import record, workdir
from labcloud.worker.api import Fenced, WorkerApi, WorkerApiError
from labcloud.worker.http_reporter import HttpReporter
from labcloud.worker.job import JobRun, RunSettings
from labcloud.worker.logship import LogShipper, ProgressSender

log = logging.getLogger(__name__)

MAX_SWEEP = 1000  # attempts asked about in one call


def still_ours(api: WorkerApi, assignment: dict[str, Any]) -> bool:
    """Whether the server still has this attempt as the job's current one, held by this worker (and its
    lease renewed); False when fenced, refused, or when the server cannot say."""
    try:
        api.json(
            "POST",
            f"/jobs/{assignment['id']}/heartbeat",
            token=str(assignment["token"]),
            job_call=True,
            tries=3,
            json={},
            what=f"a look at job {assignment['id']}",
        )
    except Fenced as exc:
        log.info("job %s (attempt %s) is no longer ours: %s", assignment["id"], assignment["attempt"], exc)
        return False
    except WorkerApiError as exc:
        log.warning("cannot tell whether job %s is still ours (%s); stopping it", assignment["id"], exc)
        return False
    return True


class ResumedRun(JobRun):
    """An attempt an earlier worker process started: followed to its end, never started again."""

    def _run(self) -> None:
        log.info("%s: taking it up again after the worker restarted", self)
        shipper = LogShipper(  # sends the attempt's log from its start: the server keeps what it has
            self.job_dir.with_name(f"{self.job_dir.name}.log"),
            self._send_log,
            interval_s=self.settings.log_interval_s,
            name=f"log-{self.id[:8]}",
        ).start()
        sender = ProgressSender(
            self._send_progress, interval_s=self.settings.progress_interval_s, name=f"progress-{self.id[:8]}"
        ).start()
        reporter = HttpReporter(self, shipper, sender)
        try:
            reporter.plan = self._plan(shipper.path)
            runner.resume(reporter.plan, reporter)
        finally:
            shipper.stop()
            sender.stop()
            shipper.path.unlink(missing_ok=True)


def take_up(
    api: WorkerApi,
    token: str,
    jobs_dir: Path,
    settings: RunSettings,
    on_end: Callable[[JobRun], None],
    grace_s: float,
    engine: Engine | None,
) -> list[ResumedRun]:
    """What an earlier worker process on ``jobs_dir`` left: the attempts the server still counts as ours,
    as runs to follow to their end (not started yet); the rest is stopped, then the containers of attempts
    that are over go from the engine (:func:`sweep`)."""
    jobs_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    resumed: list[ResumedRun] = []
    for entry in sorted(jobs_dir.iterdir()):
        if entry.is_symlink() or not entry.is_dir():
            continue
        assignment = record.load(entry, api.server)
        if assignment is not None and still_ours(api, assignment):
            resumed.append(ResumedRun(settings, assignment, on_end))
    kept = [run.job_dir for run in resumed]
    stopped = workdir.clean_leftovers(jobs_dir, grace_s, kept)
    if engine is not None:
        ended = [ref for ref in map(attempt_of, stopped) if ref is not None]
        sweep(api, token, engine, [r.key for r in resumed], ended)
    return resumed


@dataclass
class SweepResult:
    removed: list[str]
    kept: list[str]


def sweep(
    api: WorkerApi,
    token: str,
    engine: Engine,
    running: Collection[tuple[str, int]],
    stopped: Collection[tuple[str, int]],
) -> SweepResult:
    """Remove labcloud's containers on ``engine`` whose attempt is over: one of ``stopped`` (this worker's,
    given up), or one the server says is no job's current attempt. ``running``: attempts this worker runs."""
    found = {name: container_run.parse_name(name) for name in engine.labelled()}
    candidates = {name: ref for name, ref in found.items() if ref is not None and ref not in running}
    ask = sorted(
        {ref for ref in candidates.values() if ref not in stopped and container_run.is_job_id(ref[0])}
    )
    active: set[tuple[str, int]] = set()
    for start in range(0, len(ask), MAX_SWEEP):
        chunk = ask[start : start + MAX_SWEEP]
        try:
            answer = api.json(
                "POST",
                "/attempts",
                token=token,
                tries=3,
                json={"attempts": [{"id": job_id, "attempt": attempt} for job_id, attempt in chunk]},
                what="a look at the engine's containers",
            )
        except WorkerApiError as exc:
            log.warning("cannot tell which containers are over (%s); leaving them", exc.detail)
            return SweepResult([], sorted(candidates))
        active |= {(str(item["id"]), int(item["attempt"])) for item in (answer or {}).get("active") or []}
    result = SweepResult([], [])
    for name, ref in sorted(candidates.items()):
        if ref in active:
            result.kept.append(name)
            continue
        log.info("removing container %s: its attempt is over", name)
        engine.remove(name)
        result.removed.append(name)
    return result


def attempt_of(folder: Path) -> tuple[str, int] | None:
    """(job id, attempt) of an attempt's folder on a worker (``<job id>-<attempt>``)."""
    job_id, _, attempt = folder.name.rpartition("-")
    return (job_id, int(attempt)) if attempt.isdigit() and container_run.is_job_id(job_id) else None
