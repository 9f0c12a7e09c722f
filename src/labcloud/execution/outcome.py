"""How a run ended, written to the job: the same rules for the local executor and remote workers."""

from __future__ import annotations

from sqlalchemy.orm import Session

from labcloud.db.models import Job
from labcloud.execution.process import ProcessResult
from labcloud.services import files
from labcloud.services import jobs as job_service
from labcloud.services.job_states import ACTIVE, FailureReason, JobState


def succeeded(result: ProcessResult | None) -> bool:
    return result is not None and result.outcome == "exited" and result.exit_code == 0


def start_finishing(session: Session, job: Job) -> None:
    """A run that succeeded enters ``finishing`` while its outputs are stored."""
    if job.state == JobState.STAGING.value:
        job_service.transition(session, job, JobState.RUNNING)
    if job.state == JobState.RUNNING.value:
        job_service.transition(session, job, JobState.FINISHING)


def record_end(session: Session, job: Job, result: ProcessResult | None, problem: str | None = None) -> None:
    """Settle an active job. ``result`` None: it never started (cancelled while staging); ``problem``:
    the run ended but labcloud could not keep its outputs."""
    if JobState(job.state) not in ACTIVE:
        return
    usage = {}
    if result is not None:
        usage = {
            "wall_s": round(result.wall_s, 3),
            "cpu_s": round(result.cpu_s, 3),
            "peak_memory_mb": round(result.peak_memory_mb, 1),
        }
    state = JobState(job.state)
    if problem is not None and state not in (JobState.CANCELLING, JobState.CANCELLED):
        job_service.transition(
            session, job, JobState.FAILED, reason=FailureReason.SYSTEM_ERROR, message=problem
        )
        return
    if (
        state == JobState.STAGING
        and result is not None
        and result.outcome not in ("cancelled", "staging_failed")
    ):
        state = JobState(job_service.transition(session, job, JobState.RUNNING).state)
    if state == JobState.CANCELLING or (result is not None and result.outcome == "cancelled"):
        if state != JobState.CANCELLING:
            job_service.transition(session, job, JobState.CANCELLING, message="stopped by a signal")
        job_service.transition(
            session, job, JobState.CANCELLED, message="cancelled; partial outputs are kept", usage=usage
        )
        return
    assert result is not None
    if succeeded(result):
        if state != JobState.FINISHING:
            job_service.transition(session, job, JobState.FINISHING)
        count = files.count_outputs(session, job.owner_id, job.id)
        job_service.transition(
            session,
            job,
            JobState.SUCCEEDED,
            message=f"{count} output file{'s' if count != 1 else ''}",
            exit_code=0,
            progress=1.0,
            usage=usage,
        )
        return
    reason, message = failure(result, job)
    if reason == FailureReason.WORKER_LOST:  # the supervisor vanished: maybe another attempt
        job_service.fail_or_retry(session, job, reason, message)
        return
    job_service.transition(
        session, job, JobState.FAILED, reason=reason, message=message, exit_code=result.exit_code, usage=usage
    )


def failure(result: ProcessResult, job: Job) -> tuple[FailureReason, str]:
    if result.outcome == "exited":
        return FailureReason.APP_ERROR, f"the command exited with code {result.exit_code}"
    if result.outcome == "timeout":
        return FailureReason.TIMEOUT, f"stopped after its time limit of {job.resources.get('timeout_s')} s"
    if result.outcome == "out_of_memory":
        return FailureReason.OUT_OF_MEMORY, f"stopped for using more than {job.resources.get('memory_mb')} MB"
    if result.outcome == "start_failed":
        return FailureReason.SYSTEM_ERROR, result.message or "the command could not be started"
    if result.outcome == "staging_failed":
        return FailureReason.STAGING_FAILED, result.message or "the inputs could not be staged"
    if result.outcome == "lost":
        return FailureReason.WORKER_LOST, result.message or "the job's supervisor disappeared"
    return FailureReason.SYSTEM_ERROR, result.message or f"unexpected outcome {result.outcome}"
