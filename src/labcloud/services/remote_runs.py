"""What a remote runner (a pull worker, or the runner Slurm or Celery started) reports about the job its job
token holds: the command starts, a chunk of its log, its progress, its end. The same rules as the local
runner's database reporter, through the same lifecycle; the worker API's routes only adapt HTTP to these.
"""

from __future__ import annotations

import dataclasses
import uuid
from typing import Any

from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.execution.run_end import RunEnd
from labcloud.services import executor_refs, job_logs, job_tokens, lifecycle, tes_run
from labcloud.services.job_states import JobState
from labcloud.settings import Settings


class LogGap(Exception):
    """A chunk of the log starts past the bytes the server holds (``size``): send from there first."""

    def __init__(self, size: int) -> None:
        super().__init__(f"the server holds {size} bytes of the log")
        self.size = size


def start(session: Session, settings: Settings, credential: str, job_id: uuid.UUID) -> str:
    """Staging is done: the job runs (unless it was cancelled meanwhile); its state."""
    job, _ = job_tokens.held_job(session, settings, credential, job_id)
    if job.state == JobState.STAGING:
        lifecycle.transition(session, job, JobState.RUNNING)
    return str(job.state)


def append_log(
    db: Database, settings: Settings, credential: str, job_id: uuid.UUID, offset: int, data: bytes
) -> job_logs.Appended:
    """A chunk of the attempt's log; offsets count from the start of this attempt's log, which begins at
    the job's log base."""
    with db.session() as session:
        job, _ = job_tokens.held_job(session, settings, credential, job_id)
        base = executor_refs.log_base(job.executor_ref)
    return job_logs.append(settings, job_id, base, offset, data)


def progress(
    session: Session, settings: Settings, credential: str, job_id: uuid.UUID, fraction: float
) -> bool:
    """How far the job is; whether its runner should cancel it."""
    job, _ = job_tokens.held_job(session, settings, credential, job_id)
    job.progress = fraction
    return job.state == JobState.CANCELLING


def finish(
    session: Session,
    settings: Settings,
    credential: str,
    job_id: uuid.UUID,
    end: RunEnd,
    steps: list[dict[str, Any]] | None = None,
    log_end: tuple[int, bytes] | None = None,
) -> str:
    """The run ended (its outputs are stored): record the end; the job's state. A task's ``steps`` name
    their stretches of this attempt's log, which are moved to where it begins in the job's log.
    ``log_end`` (offset, bytes): the log's last chunk, written first; :class:`LogGap` (nothing recorded)
    when it starts past what the server holds."""
    job, _ = job_tokens.held_job(session, settings, credential, job_id)
    if log_end is not None:
        offset, data = log_end
        appended = job_logs.append(settings, job_id, executor_refs.log_base(job.executor_ref), offset, data)
        if appended.gap:
            raise LogGap(appended.size)
    if steps is not None:
        base = executor_refs.log_base(job.executor_ref)
        end = dataclasses.replace(end, steps=[_shifted(step, base) for step in steps])
    lifecycle.record_end(session, job, end, tes_run.count_outputs(session, job))
    return str(job.state)


def _shifted(step: dict[str, Any], base: int) -> dict[str, Any]:
    found = dict(step)
    for key in ("log_start", "log_end"):
        if found.get(key) is not None:
            found[key] += base
    return found
