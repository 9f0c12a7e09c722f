"""A job's life in the database: every state change goes through :func:`transition`, and the two ways an
active job ends are written once: :func:`record_end` (its runner reported how the run ended) and
:func:`end_without_report` (its runner is gone: lost, revoked, or its engine ended it).

What each state means for the other columns (timestamps, lease, message) sits next to the transition
table in :data:`ON_ENTER`; which transitions exist is :mod:`labcloud.services.job_states`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from labcloud.db.models import Job, JobEvent, Project
from labcloud.db.types import utcnow
from labcloud.errors import Conflict
from labcloud.execution.run_end import RunEnd
from labcloud.services import accounting, quotas, webhooks
from labcloud.services.job_states import (
    ACTIVE,
    TERMINAL,
    FailureReason,
    JobState,
    can_retry,
    refusal,
)
from labcloud.telemetry import metrics


def _clear_run(job: Job, now: Any) -> dict[str, Any]:
    """A queued job is waiting afresh: nothing of an earlier attempt's run is left on it."""
    return {
        "finished_at": None,
        "started_at": None,
        "progress": None,
        "exit_code": None,
        "executor_ref": None,
        "worker_id": None,
        "lease_expires_at": None,
    }


def _started(job: Job, now: Any) -> dict[str, Any]:
    return {"started_at": now} if job.started_at is None else {}


def _ended(job: Job, now: Any) -> dict[str, Any]:
    return {"finished_at": now, "lease_expires_at": None}


# Bookkeeping on entering a state (beside the transition table of job_states).
ON_ENTER: dict[JobState, Callable[[Job, Any], dict[str, Any]]] = {
    JobState.QUEUED: _clear_run,
    JobState.RUNNING: _started,
    JobState.SUCCEEDED: _ended,
    JobState.FAILED: _ended,
    JobState.CANCELLED: _ended,
}
# States whose message is always replaced (an empty one clears the previous state's words).
MESSAGE_ALWAYS = TERMINAL | {JobState.QUEUED}


def transition(
    session: Session,
    job: Job,
    target: JobState,
    *,
    reason: FailureReason | None = None,
    message: str = "",
    **changes: Any,
) -> Job:
    """Move ``job`` to ``target`` if the state machine allows it and nobody moved it first.

    The update is conditional on the state we read, so two writers (the dispatcher and a cancel, say)
    can never both win. Raises Conflict when the transition is not allowed or was lost.
    """
    current = JobState(job.state)
    why_not = refusal(current, target, reason)
    if why_not:
        raise Conflict(f"Job {job.id} is {current.value}: {why_not}.")
    now = utcnow()
    values: dict[str, Any] = {"state": target, "reason": reason, "updated_at": now}
    enter = ON_ENTER.get(target)
    if enter is not None:
        values.update(enter(job, now))
    values.update(changes)
    if message or target in MESSAGE_ALWAYS:
        values["message"] = message
    attempts = job.attempts
    result = session.execute(
        update(Job)
        .where(Job.id == job.id, Job.state == current)
        .values(**values)
        .execution_options(synchronize_session=False)  # (the job is told below, as written)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        raise Conflict(f"Job {job.id} changed state to {job.state} meanwhile.")
    for key, value in values.items():  # what the row holds now, with nothing left to write
        set_committed_value(job, key, value)
    session.add(
        JobEvent(job_id=job.id, at=now, from_state=current, to_state=target, reason=reason, message=message)
    )
    webhooks.emit_state_change(session, job, current.value, target.value, reason, message)
    metrics.job_moved(session, job, current, target, now, attempts)  # (counted once this commits)
    if target in TERMINAL:  # the attempt's usage is recorded and charged; what the job held goes back
        if current in ACTIVE:
            accounting.attempt_ended(session, job, target.value, changes)
        quotas.release(session, job)
        if not (target == JobState.FAILED and can_retry(reason, job.attempts, job.max_attempts)):
            webhooks.emit_job_end(session, job)  # (a lost run that is retried has not ended)
    return job


def fail_or_retry(session: Session, job: Job, reason: FailureReason, message: str) -> Job:
    """Fail the job; when its runner was lost and attempts remain, queue it again."""
    transition(session, job, JobState.FAILED, reason=reason, message=message)
    if can_retry(reason, job.attempts, job.max_attempts):
        project = session.get(Project, job.project_id)
        try:
            if project is not None:
                with session.begin_nested():  # (holds that fitted are undone when another does not)
                    quotas.reserve(session, project, job)
        except quotas.QuotaExceeded as exc:  # no room for another attempt: it stays failed
            session.execute(
                update(Job).where(Job.id == job.id).values(message=f"{message}; not retried: {exc.detail}")
            )
            job.message = f"{message}; not retried: {exc.detail}"
            webhooks.emit_job_end(session, job)
            return job
        transition(
            session,
            job,
            JobState.QUEUED,
            message=f"retrying after {reason.value} (attempt {job.attempts + 1} of {job.max_attempts})",
        )
    return job


def in_engine_queue(job: Job) -> bool:
    """Queued, and already handed to an engine's queue (Slurm, Celery): an engine's worker row holds it."""
    return job.state == JobState.QUEUED and job.worker_id is not None


# --- how an active job ends -------------------------------------------------------------------------------


def end_without_report(session: Session, job: Job, reason: FailureReason, message: str) -> bool:
    """End an active job (or one waiting in an engine's queue) whose runner will never report: a job being
    cancelled is cancelled; any other fails, and is queued again while attempts remain for a lost runner.
    False when the job had already ended or moved on (nothing to do)."""
    try:
        if job.state == JobState.CANCELLING:
            transition(session, job, JobState.CANCELLED, message=f"cancelled; {message}")
        elif job.state in ACTIVE or in_engine_queue(job):
            fail_or_retry(session, job, reason, message)
        else:
            return False
    except Conflict:
        return False
    return True


def begin_finishing(session: Session, job: Job) -> bool:
    """A run that succeeded enters ``finishing`` while its outputs are stored. False if it is no longer
    running (cancelled meanwhile: its outputs are still kept, as partial ones)."""
    if job.state == JobState.STAGING:
        transition(session, job, JobState.RUNNING)
    if job.state == JobState.RUNNING:
        transition(session, job, JobState.FINISHING)
    return job.state == JobState.FINISHING


def _kept(outputs: int) -> str:
    if outputs <= 0:
        return "it had written no outputs"
    if outputs == 1:
        return "its one partial output file is kept"
    return f"its {outputs} partial output files are kept"


def record_end(session: Session, job: Job, end: RunEnd, outputs: int = 0) -> None:
    """Settle an active job by how its run ended. ``outputs``: how many output files it has now."""
    state = JobState(job.state)
    if state not in ACTIVE:
        return
    usage = {k: round(float(v), 3) for k, v in end.usage.items()}
    if end.image:
        job.image = end.image
    if end.steps is not None:
        job.steps = end.steps
    note = f"; {end.note}" if end.note else ""
    if end.problem is not None and state != JobState.CANCELLING:
        transition(
            session, job, JobState.FAILED, reason=FailureReason.SYSTEM_ERROR, message=end.problem, usage=usage
        )
        return
    if state == JobState.STAGING and end.outcome not in (
        "cancelled",
        "staging_failed",
        "image_unavailable",
        "lost",
    ):
        state = JobState(transition(session, job, JobState.RUNNING).state)
    if state == JobState.CANCELLING or end.outcome == "cancelled":
        if state != JobState.CANCELLING:
            transition(session, job, JobState.CANCELLING, message="stopped by a signal")
        transition(
            session,
            job,
            JobState.CANCELLED,
            message=f"cancelled; {_kept(outputs)}{note}",
            usage=usage,
        )
        return
    if end.succeeded:
        if state != JobState.FINISHING:
            transition(session, job, JobState.FINISHING)
        transition(
            session,
            job,
            JobState.SUCCEEDED,
            message=f"{outputs} output file{'s' if outputs != 1 else ''}{note}",
            exit_code=0,
            progress=1.0,
            usage=usage,
        )
        return
    reason, message = failure(end, job)
    if reason == FailureReason.WORKER_LOST:  # the supervisor vanished: maybe another attempt
        fail_or_retry(session, job, reason, message)
        return
    transition(
        session,
        job,
        JobState.FAILED,
        reason=reason,
        message=message + note,
        exit_code=end.exit_code,
        usage=usage,
    )


def failure(end: RunEnd, job: Job) -> tuple[FailureReason, str]:
    if end.outcome == "exited":
        return FailureReason.APP_ERROR, f"the command exited with code {end.exit_code}"
    if end.outcome == "timeout":
        cut = quotas.was_cut(job)
        if cut is not None:
            return (
                FailureReason.QUOTA_EXCEEDED,
                f"stopped after {cut:g} s: what its project's quota had left when it was queued",
            )
        return FailureReason.TIMEOUT, f"stopped after its time limit of {job.resources.timeout_s} s"
    if end.outcome == "out_of_memory":
        return FailureReason.OUT_OF_MEMORY, f"stopped for using more than {job.resources.memory_mb} MB"
    if end.outcome == "start_failed":
        return FailureReason.SYSTEM_ERROR, end.message or "the command could not be started"
    if end.outcome == "staging_failed":
        return FailureReason.STAGING_FAILED, end.message or "the inputs could not be staged"
    if end.outcome == "image_unavailable":
        return FailureReason.IMAGE_UNAVAILABLE, end.message or "the container image is not available"
    if end.outcome == "lost":
        return FailureReason.WORKER_LOST, end.message or "the job's supervisor disappeared"
    return FailureReason.SYSTEM_ERROR, end.message or f"unexpected outcome {end.outcome}"
