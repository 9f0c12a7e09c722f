"""The job state machine: every state, every allowed transition, why a job failed, and how a run ended.
Nothing else decides. (No database here: remote runners import it.)

queued → staging → running → finishing → succeeded
   │        │         │          │
   │        └─────────┴──────────┴────→ failed (reason)
   └──→ cancelled        staging/running/finishing → cancelling → cancelled
failed (worker_lost, retries left) → queued
A queued job fails when it is rejected, or when the Slurm or Celery queue it waits in loses it.
"""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    STAGING = "staging"
    RUNNING = "running"
    FINISHING = "finishing"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


class FailureReason(StrEnum):
    APP_ERROR = "app_error"  # the command exited non-zero; its exit code is kept
    TIMEOUT = "timeout"
    OUT_OF_MEMORY = "out_of_memory"
    STAGING_FAILED = "staging_failed"
    WORKER_LOST = "worker_lost"
    SYSTEM_ERROR = "system_error"
    REJECTED = "rejected"  # refused before it ran, e.g. by a quota
    IMAGE_UNAVAILABLE = "image_unavailable"  # the container engine does not have the app's image
    QUOTA_EXCEEDED = "quota_exceeded"  # it reached the time its project's quota had left for it


# A queued job never ran, so it cannot have exited, timed out or run out of memory. (It can be rejected,
# and one waiting in Slurm's or Celery's queue can be lost there, or fail to reach its runner.)
QUEUED_CANNOT_FAIL_BY = frozenset(
    {
        FailureReason.APP_ERROR,
        FailureReason.TIMEOUT,
        FailureReason.OUT_OF_MEMORY,
        FailureReason.QUOTA_EXCEEDED,
    }
)

TERMINAL = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
# States in which something (a process, a worker) holds the job.
ACTIVE = frozenset({JobState.STAGING, JobState.RUNNING, JobState.FINISHING, JobState.CANCELLING})

TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.QUEUED: frozenset({JobState.STAGING, JobState.CANCELLED, JobState.FAILED}),
    JobState.STAGING: frozenset({JobState.RUNNING, JobState.FAILED, JobState.CANCELLING}),
    JobState.RUNNING: frozenset({JobState.FINISHING, JobState.FAILED, JobState.CANCELLING}),
    JobState.FINISHING: frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLING}),
    JobState.CANCELLING: frozenset({JobState.CANCELLED}),
    JobState.FAILED: frozenset({JobState.QUEUED}),
    JobState.SUCCEEDED: frozenset(),
    JobState.CANCELLED: frozenset(),
}


def refusal(current: JobState, target: JobState, reason: FailureReason | None) -> str | None:
    """Why ``current → target`` (with ``reason``) is not allowed, or None when it is."""
    if target not in TRANSITIONS[current]:
        return f"a {current.value} job cannot become {target.value}"
    if target == JobState.FAILED and reason is None:
        return "a failure needs a reason"
    if target != JobState.FAILED and reason is not None:
        return "only failures carry a reason"
    if current == JobState.QUEUED and target == JobState.FAILED and reason in QUEUED_CANNOT_FAIL_BY:
        return f"a queued job cannot fail by {reason.value if reason else 'nothing'}"
    return None


def can_retry(reason: FailureReason | None, attempts: int, max_attempts: int) -> bool:
    """Only a lost runner earns another attempt: an app that failed would fail again."""
    return reason == FailureReason.WORKER_LOST and attempts < max_attempts
