"""One job that an engine (Slurm, Celery) started: take it, run it through the one runner, report.

The engine's executor handed the job over with a job token. This takes the job (its lease starts), runs it
as a :class:`~labcloud.worker.job.JobRun`, exactly as a pull worker runs a claimed job, and renews the
lease with job heartbeats, whose answers carry cancellation. A second delivery of the same job waits while
another runner's lease is live, and takes the job over (as a new attempt) only once that lease has run out.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from labcloud.execution.engine_probe import EngineProbe
from labcloud.execution.sandbox import SandboxMode, resolve_sandboxing
from labcloud.worker.api import Abandoned, Backoff, Fenced, WorkerApi, WorkerApiError, problem_detail
from labcloud.worker.job import JobRun, RunSettings

log = logging.getLogger(__name__)

HELD_TYPE = "/held"


@dataclass(frozen=True)
class Outcome:
    """``ran``: the job was taken and ran here (``state`` as the server last said); ``message`` otherwise."""

    ran: bool
    state: str = ""
    message: str = ""


def run_one(
    api: WorkerApi,
    job_id: str,
    token: str,
    *,
    work_dir: Path,
    sandbox: SandboxMode = "auto",
    job_user: str = "nobody",
    grace_s: float = 5.0,
    wait_held_s: float = 3600.0,
    stop: threading.Event | None = None,
    engines: EngineProbe | None = None,
    top: Path | None = None,
) -> Outcome:
    """Take job ``job_id`` with ``token`` and run it to its end. ``stop`` (set from outside, e.g. by a
    signal) kills the job's process and reports nothing more: the engine's state then tells the server.
    ``engines``: the container engine of this machine (None: container apps cannot run here). ``top``: the
    worker's own folder holding ``work_dir`` (from it down, a job user without a sandbox is let through to
    its job's folder); ``work_dir`` itself by default."""
    stop = stop or threading.Event()
    assignment = _take(api, job_id, token, wait_held_s, stop)
    if assignment is None:
        return Outcome(False, message="nothing to run: the job ended, was cancelled or moved on")
    work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    sandboxing = resolve_sandboxing(sandbox, job_user)
    if not sandboxing.enabled:
        log.warning("job %s: %s", job_id, sandboxing.describe())
    done = threading.Event()
    run = JobRun(
        RunSettings(
            api=api,
            jobs_dir=work_dir,
            work_dir=top,
            sandboxing=sandboxing,
            hidden=(work_dir.resolve(),),
            grace_s=grace_s,
            engines=engines,
        ),
        assignment,
        on_done=lambda _run: done.set(),
    )
    run.start()

    def stopped() -> None:  # at once: the job's own processes got the same signal and are ending now
        stop.wait()
        if not done.is_set():
            run.request_forget("the engine stopped it")

    threading.Thread(target=stopped, name="engine-stop", daemon=True).start()
    interval = 1.0
    next_beat = time.monotonic() + interval
    while not done.wait(0.1) and not stop.is_set():
        if time.monotonic() >= next_beat:
            interval = _heartbeat(api, run) or interval
            next_beat = time.monotonic() + interval
    run.join()
    return Outcome(True, state=run.final_state or "", message=run.forget_reason)


def _take(
    api: WorkerApi, job_id: str, token: str, wait_held_s: float, stop: threading.Event
) -> dict[str, Any] | None:
    deadline = time.monotonic() + wait_held_s
    backoff = Backoff(base=1.0, cap=15.0)
    while True:
        try:
            response = api.call(
                "POST",
                # start: a job with nothing to stage runs from the take on (an older server: staging)
                f"/jobs/{job_id}/take?start=true",
                token=token,
                job_call=True,
                until=stop,
                accept=(409,),
            )
        except (Fenced, Abandoned) as exc:
            log.info("job %s: %s", job_id, getattr(exc, "detail", "") or exc)
            return None
        if response.status_code != 409:
            job: dict[str, Any] = response.json()["job"]
            return job
        kind, detail = problem_detail(response)
        if not kind.endswith(HELD_TYPE):
            raise WorkerApiError(409, detail)
        if time.monotonic() > deadline:
            log.warning("job %s: still held by another runner; giving up: %s", job_id, detail)
            return None
        log.info("job %s: %s", job_id, detail)
        if stop.wait(backoff.next()):
            return None


def _heartbeat(api: WorkerApi, run: JobRun) -> float | None:
    """Renew the lease; act on the answer. The interval the server asks for, when it answered."""
    if not run.reporting:
        return None
    try:
        answer = api.json(
            "POST", f"/jobs/{run.id}/heartbeat", token=run.token, job_call=True, tries=3, what="heartbeat"
        )
    except Fenced as exc:
        run.request_forget(f"the server says it is no longer ours ({exc.detail})")
        return None
    except WorkerApiError as exc:  # unreachable for a while: the job runs on; the lease may run out
        log.warning("%s: heartbeat failed: %s", run, exc.detail)
        return None
    if answer.get("cancel"):
        run.request_cancel("cancelled by its owner")
    return float(answer.get("heartbeat_interval_s") or 1.0)
