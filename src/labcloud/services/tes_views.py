"""GA4GH TES tasks read back: the caller's task or a page of them, TES states from a job's state (and
the jobs in a TES state), the three views (MINIMAL, BASIC, FULL) and the service's description. Each
executor's output in the FULL view is its stretch of the job's log (:mod:`.job_logs`)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Select, select
from sqlalchemy.orm import Session

from labcloud import __version__
from labcloud.db.models import Job, JobTag, TesTask, User
from labcloud.errors import InvalidInput, NotFound
from labcloud.services import job_logs
from labcloud.services.job_states import FailureReason, JobState
from labcloud.services.pagination import decode_cursor, paginate
from labcloud.services.tes_document import SCHEME, TaskRefused
from labcloud.services.tes_task_in import BACKEND_PARAMETERS
from labcloud.settings import Settings

TES_VERSION = "1.1.0"
VIEWS = ("MINIMAL", "BASIC", "FULL")
STATES = (
    "UNKNOWN",
    "QUEUED",
    "INITIALIZING",
    "RUNNING",
    "PAUSED",
    "COMPLETE",
    "EXECUTOR_ERROR",
    "SYSTEM_ERROR",
    "CANCELED",
    "PREEMPTED",
    "CANCELING",
)
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 256, 2047
LOG_TAIL_BYTES = 64 * 1024  # of each executor's output in the FULL view
EXECUTOR_FAILURES = frozenset({FailureReason.APP_ERROR, FailureReason.TIMEOUT, FailureReason.OUT_OF_MEMORY})


def get(session: Session, user: User, task_id: str) -> tuple[Job, TesTask]:
    """The caller's task; another user's (or none) is 404."""
    try:
        job_id = uuid.UUID(task_id)
    except ValueError:
        raise NotFound(f"You have no task with id {task_id[:100]!r}.") from None
    row = session.get(TesTask, job_id)
    job = session.get(Job, job_id) if row is not None else None
    if row is None or job is None or job.owner_id != user.id:
        raise NotFound(f"You have no task with id {task_id}.")
    return job, row


@dataclass
class TaskFilter:
    name_prefix: str = ""
    state: str = ""
    tags: list[tuple[str, str]] | None = None


def list_tasks(
    session: Session, user: User, flt: TaskFilter, page_size: int, page_token: str | None
) -> tuple[list[tuple[Job, TesTask]], str | None]:
    """One page of the caller's tasks, newest first."""
    stmt: Select[Any] = select(Job).join(TesTask, TesTask.job_id == Job.id).where(Job.owner_id == user.id)
    if flt.name_prefix:
        escaped = flt.name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        stmt = stmt.where(Job.name.like(escaped + "%", escape="\\"))
    if flt.state:
        stmt = stmt.where(_state_condition(flt.state))
    for key, value in flt.tags or []:
        tagged = select(JobTag.job_id).where(JobTag.key == key)
        if value:
            tagged = tagged.where(JobTag.value == value)
        stmt = stmt.where(Job.id.in_(tagged))
    if page_token:
        try:
            decode_cursor(page_token)
        except InvalidInput:
            raise TaskRefused("page_token is not one this server gave out.") from None
    page = paginate(session, stmt, Job.id, limit=page_size, cursor=page_token, newest_first=True)
    ids = [job.id for job in page.items]
    rows = {row.job_id: row for row in session.scalars(select(TesTask).where(TesTask.job_id.in_(ids)))}
    return [(job, rows[job.id]) for job in page.items], page.next_cursor


def _state_condition(state: str) -> Any:
    """The jobs in a TES state (none for the states labcloud never has: UNKNOWN, PAUSED, PREEMPTED)."""
    simple = {
        "QUEUED": [JobState.QUEUED],
        "INITIALIZING": [JobState.STAGING],
        "RUNNING": [JobState.RUNNING, JobState.FINISHING],
        "COMPLETE": [JobState.SUCCEEDED],
        "CANCELING": [JobState.CANCELLING],
        "CANCELED": [JobState.CANCELLED],
    }
    if state in simple:
        return Job.state.in_(simple[state])
    failed = Job.state == JobState.FAILED
    if state == "EXECUTOR_ERROR":
        return failed & Job.reason.in_(list(EXECUTOR_FAILURES))
    if state == "SYSTEM_ERROR":
        return failed & Job.reason.not_in(list(EXECUTOR_FAILURES))
    return Job.id.is_(None)


def tes_state(job: Job) -> str:
    """The TES state of a job."""
    state = JobState(job.state)
    if state == JobState.FAILED:
        return "EXECUTOR_ERROR" if job.reason in EXECUTOR_FAILURES else "SYSTEM_ERROR"
    return {
        JobState.QUEUED: "QUEUED",
        JobState.STAGING: "INITIALIZING",
        JobState.RUNNING: "RUNNING",
        JobState.FINISHING: "RUNNING",
        JobState.SUCCEEDED: "COMPLETE",
        JobState.CANCELLING: "CANCELING",
        JobState.CANCELLED: "CANCELED",
    }[state]


def view(settings: Settings, job: Job, row: TesTask, which: str) -> dict[str, Any]:
    """The task in one of the three views: MINIMAL (id and state), BASIC (all but the executors' output,
    inline content and system logs), FULL (all; inline content is never shown back)."""
    out: dict[str, Any] = {"id": str(job.id), "state": tes_state(job)}
    if which == "MINIMAL":
        return out
    out |= row.document
    out["creation_time"] = rfc3339(job.created_at)
    out["logs"] = _logs(settings, job, row, full=which == "FULL")
    return out


def _logs(settings: Settings, job: Job, row: TesTask, full: bool) -> list[dict[str, Any]]:
    if job.attempts == 0 and job.state == JobState.QUEUED:
        return []
    entry: dict[str, Any] = {
        "logs": [_executor_log(settings, job, step, full) for step in job.steps or []],
        "outputs": list(row.outputs_log),
        "metadata": {"attempt": str(job.attempts), "labcloud_state": str(job.state)},
    }
    if job.reason:
        entry["metadata"]["labcloud_reason"] = str(job.reason)
    if job.started_at:
        entry["start_time"] = rfc3339(job.started_at)
    if job.finished_at:
        entry["end_time"] = rfc3339(job.finished_at)
    if full:
        system = list(row.system_logs)
        if job.message and job.state in (JobState.FAILED, JobState.CANCELLED):
            system.append(job.message)
        entry["system_logs"] = system
    return [entry]


def _executor_log(settings: Settings, job: Job, step: dict[str, Any], full: bool) -> dict[str, Any]:
    code = step.get("exit_code")
    out: dict[str, Any] = {"exit_code": int(code) if isinstance(code, int) else -1}
    for key, field in (("started_at", "start_time"), ("finished_at", "end_time")):
        if isinstance(step.get(key), int | float):
            out[field] = rfc3339(datetime.fromtimestamp(step[key], UTC))
    if full:
        out["stdout"] = _log_slice(settings, job.id, step.get("log_start"), step.get("log_end"))
        out["stderr"] = ""
    return out


def _log_slice(settings: Settings, job_id: uuid.UUID, start: Any, end: Any) -> str:
    """The end of one executor's stretch of the job's log (its stdout and stderr together)."""
    if not isinstance(start, int) or not isinstance(end, int) or end <= start:
        return ""
    start = max(start, end - LOG_TAIL_BYTES)
    return job_logs.text(job_logs.read(settings, job_id, start, end - start))


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def service_info(settings: Settings) -> dict[str, Any]:
    return {
        "id": "dev.labcloud.tes",
        "name": "labcloud",
        "type": {"group": "org.ga4gh", "artifact": "tes", "version": TES_VERSION},
        "description": "GA4GH TES on labcloud: a task is a job, its executors run in containers.",
        "organization": {"name": "labcloud", "url": settings.public_url},
        "documentationUrl": f"{settings.public_url}/docs",
        "version": __version__,
        "storage": [f"{SCHEME}///", "http://", "https://", *(f"s3://{b}" for b in settings.tes_s3_buckets)],
        "tesResources_backend_parameters": list(BACKEND_PARAMETERS),
    }
