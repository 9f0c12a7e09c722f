"""The job state machine, walked whole: every transition from every state, with and without a reason, is
either taken (and written to the job and its history with the bookkeeping of its target state) or refused
with a Conflict that changes nothing. Then how runs end (record_end) and how runners vanish
(end_without_report)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import select
from sqlalchemy import update as sa_update
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import Job, JobEvent, Quota, UsageRecord, User
from labcloud.errors import Conflict
from labcloud.execution.run_end import RunEnd
from labcloud.registry.spec_parts import Resources
from labcloud.services import lifecycle, projects, quotas
from labcloud.services.job_states import (
    ACTIVE,
    TERMINAL,
    TRANSITIONS,
    FailureReason,
    JobState,
)
from labcloud.settings import Settings

REASONS: list[FailureReason | None] = [None, *FailureReason]


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings)
    yield database
    database.dispose()


@pytest.fixture
def owner(db: Database) -> uuid.UUID:
    with db.session() as session:
        user = User(email=f"{uuid.uuid4().hex}@example.org", password_hash="x")
        session.add(user)
        session.flush()
        return user.id


def make_job(session: Session, owner: uuid.UUID, state: JobState, **fields: object) -> Job:
    fields = {"attempts": 1, "max_attempts": 2, **fields}
    user = session.get(User, owner)
    assert user is not None
    job = Job(
        owner_id=owner,
        project_id=projects.personal(session, user).id,
        app="a",
        version="1",
        entrypoint="e",
        spec={},
        spec_hash="0" * 64,
        params={},
        inputs={},
        env={},
        resources=Resources(timeout_s=60, memory_mb=100),
        tags={},
        state=state,
        usage={},
        **fields,
    )
    session.add(job)
    session.flush()
    return job


def expected_refusal(current: JobState, target: JobState, reason: FailureReason | None) -> bool:
    if target not in TRANSITIONS[current]:
        return True
    if (target == JobState.FAILED) != (reason is not None):
        return True
    return current == JobState.QUEUED and reason in (
        FailureReason.APP_ERROR,
        FailureReason.TIMEOUT,
        FailureReason.OUT_OF_MEMORY,
        FailureReason.QUOTA_EXCEEDED,  # (it ran out of the time a quota left it: it must have run)
    )


def test_every_transition_is_taken_or_refused_as_the_table_says(db: Database, owner: uuid.UUID) -> None:
    taken = refused = 0
    for current, target, reason in itertools.product(JobState, JobState, REASONS):
        with db.session() as session:
            job = make_job(session, owner, current, worker_id=uuid.uuid4(), lease_expires_at=None)
            job_id = job.id
            before = (job.state, job.reason, job.message)
            if expected_refusal(current, target, reason):
                with pytest.raises(Conflict):
                    lifecycle.transition(session, job, target, reason=reason, message="why")
                assert (job.state, job.reason, job.message) == before
                assert not session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
                refused += 1
                continue
            lifecycle.transition(session, job, target, reason=reason, message="why")
            taken += 1
        with db.session() as session:
            stored = session.get(Job, job_id)
            assert stored is not None
            assert (stored.state, stored.reason, stored.message) == (target, reason, "why")
            events = session.scalars(select(JobEvent).where(JobEvent.job_id == job_id)).all()
            assert [(e.from_state, e.to_state, e.reason) for e in events] == [(current, target, reason)]
            if target in TERMINAL:
                assert stored.finished_at is not None and stored.lease_expires_at is None
            if target == JobState.RUNNING:
                assert stored.started_at is not None
            if target == JobState.QUEUED:  # waiting afresh: nothing of the last run is left on it
                assert stored.worker_id is None and stored.started_at is None and stored.finished_at is None
    assert taken + refused == len(JobState) ** 2 * len(REASONS) and taken > len(JobState)


def test_a_lost_transition_race_is_a_conflict(db: Database, owner: uuid.UUID) -> None:
    with db.session() as session:
        job_id = make_job(session, owner, JobState.RUNNING).id
    with db.session() as first, db.session() as second:
        mine, theirs = first.get(Job, job_id), second.get(Job, job_id)
        assert mine is not None and theirs is not None
        lifecycle.transition(first, mine, JobState.CANCELLING)
        first.commit()
        with pytest.raises(Conflict, match="meanwhile"):
            lifecycle.transition(second, theirs, JobState.FINISHING)
        assert theirs.state == JobState.CANCELLING  # refreshed: the winner's state


END_CASES = [
    # (state when the end arrives, how the run ended) -> (final state, reason)
    (JobState.RUNNING, RunEnd("exited", 0), (JobState.SUCCEEDED, None)),
    (JobState.STAGING, RunEnd("image_unavailable"), (JobState.FAILED, FailureReason.IMAGE_UNAVAILABLE)),
    (JobState.STAGING, RunEnd("exited", 0), (JobState.SUCCEEDED, None)),
    (JobState.FINISHING, RunEnd("exited", 0), (JobState.SUCCEEDED, None)),
    (JobState.RUNNING, RunEnd("exited", 2), (JobState.FAILED, FailureReason.APP_ERROR)),
    (JobState.RUNNING, RunEnd("timeout"), (JobState.FAILED, FailureReason.TIMEOUT)),
    (JobState.RUNNING, RunEnd("out_of_memory"), (JobState.FAILED, FailureReason.OUT_OF_MEMORY)),
    (JobState.RUNNING, RunEnd("start_failed"), (JobState.FAILED, FailureReason.SYSTEM_ERROR)),
    (JobState.STAGING, RunEnd("staging_failed"), (JobState.FAILED, FailureReason.STAGING_FAILED)),
    (
        JobState.RUNNING,
        RunEnd("exited", 0, problem="disk full"),
        (JobState.FAILED, FailureReason.SYSTEM_ERROR),
    ),
    (JobState.RUNNING, RunEnd("cancelled"), (JobState.CANCELLED, None)),
    (JobState.CANCELLING, RunEnd("exited", 0), (JobState.CANCELLED, None)),
    (JobState.CANCELLING, RunEnd("exited", 0, problem="full"), (JobState.CANCELLED, None)),
    (JobState.STAGING, RunEnd("lost"), (JobState.QUEUED, None)),  # attempts left: queued again
    (JobState.RUNNING, RunEnd("lost"), (JobState.QUEUED, None)),
]


@pytest.mark.parametrize(("state", "end", "expected"), END_CASES)
def test_how_a_run_ends_decides_the_job_s_state(
    db: Database,
    owner: uuid.UUID,
    state: JobState,
    end: RunEnd,
    expected: tuple[JobState, FailureReason | None],
) -> None:
    with db.session() as session:
        job = make_job(session, owner, state)
        lifecycle.record_end(session, job, end, outputs=2)
        assert (job.state, job.reason) == expected
        if job.state == JobState.SUCCEEDED:
            assert job.message == "2 output files" and job.progress == 1.0 and job.exit_code == 0
        events = session.scalars(select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.id))
        path = [e.to_state for e in events]
        assert path[-1] == expected[0]
        assert all(b in TRANSITIONS[a] for a, b in zip([state, *path], path, strict=False))


def test_a_note_on_kept_outputs_joins_the_message(db: Database, owner: uuid.UUID) -> None:
    with db.session() as session:
        job = make_job(session, owner, JobState.RUNNING)
        lifecycle.record_end(session, job, RunEnd("exited", 0, note="1 output entry not kept: 'x'"), 1)
        assert job.message == "1 output file; 1 output entry not kept: 'x'"


def test_a_runner_that_vanishes_ends_its_job_once(db: Database, owner: uuid.UUID) -> None:
    with db.session() as session:
        lost = make_job(session, owner, JobState.RUNNING)
        cancelling = make_job(session, owner, JobState.CANCELLING)
        spent = make_job(session, owner, JobState.RUNNING, attempts=2)  # no attempts left
        ended = make_job(session, owner, JobState.SUCCEEDED)
        reason = FailureReason.WORKER_LOST
        assert lifecycle.end_without_report(session, lost, reason, "its worker stopped answering")
        assert lost.state == JobState.QUEUED and "retrying after worker_lost" in lost.message
        assert lifecycle.end_without_report(session, cancelling, reason, "gone")
        assert cancelling.state == JobState.CANCELLED
        assert lifecycle.end_without_report(session, spent, reason, "gone")
        assert (spent.state, spent.reason) == (JobState.FAILED, reason)
        assert not lifecycle.end_without_report(session, ended, reason, "gone")
        assert ended.state == JobState.SUCCEEDED
        for job in (lost, cancelling, spent, ended):
            assert job.state not in ACTIVE


def test_an_attempt_is_recorded_and_a_retry_needs_room_in_the_quotas(db: Database, owner: uuid.UUID) -> None:
    """A lost run writes its usage record and gives back what the job held; it is retried only when its
    project's quotas can hold it again, and the holds of a retry that does not fit are all undone."""
    with db.session() as session:
        user = session.get(User, owner)
        assert user is not None
        project = projects.personal(session, user)
        quotas.set_quota(session, project, "cpu_hours", 100, "none")
        quotas.set_quota(session, project, "concurrent_jobs", 1, "none")
        job = make_job(session, owner, JobState.QUEUED, attempts=0, max_attempts=3)
        quotas.reserve(session, project, job)
        assert job.quota_hold == {"cpu_hours": pytest.approx(60 / 3600), "concurrent_jobs": 1.0}
        lifecycle.transition(session, job, JobState.STAGING, attempts=1)
        lifecycle.transition(session, job, JobState.RUNNING)
        # the slot goes to someone else while it runs: no room for a retry
        session.execute(sa_update(Quota).where(Quota.resource == "concurrent_jobs").values(limit=0))
        lifecycle.fail_or_retry(session, job, FailureReason.WORKER_LOST, "lost")
        assert job.state == JobState.FAILED and "not retried" in job.message, job.message
        rows = {q.resource: q for q in session.scalars(select(Quota))}
        for row in rows.values():
            session.refresh(row)
        assert rows["cpu_hours"].reserved == pytest.approx(0.0) and rows["concurrent_jobs"].reserved == 0.0
        [record] = session.scalars(select(UsageRecord).where(UsageRecord.job_id == job.id)).all()
        assert (record.attempt, record.state, record.project_id) == (1, "failed", project.id)
        assert rows["cpu_hours"].used == pytest.approx(record.cpu_hours)
