"""A lone user's many queued jobs (a sweep) are dispatched in batches, in order, and a job that does not fit
keeps that user's later ones behind it."""

from __future__ import annotations

import uuid
from typing import Any, cast

from fastapi.testclient import TestClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from conftest import Account
from labcloud.db.engine import Database
from labcloud.db.models import Job, User
from labcloud.execution.executors.base import Executor
from labcloud.execution.scheduler import BATCH, Scheduler
from labcloud.registry.spec_parts import Resources
from labcloud.services import lifecycle, projects
from labcloud.services.job_states import JobState
from labcloud.settings import Settings


class _Cpus:
    """An executor with ``cpus`` of room that nothing gives back."""

    name = "cpus"
    dispatched = True
    submit_lot = 0

    def __init__(self, cpus: float) -> None:
        self.free = cpus
        self.started: list[uuid.UUID] = []

    def fits_now(self, resources: Resources) -> bool:
        return resources.cpus <= self.free

    def admit(self, session: Session, job: Job) -> None:
        lifecycle.transition(session, job, JobState.STAGING, attempts=job.attempts + 1)

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        self.free -= resources.cpus
        self.started.append(job_id)

    def running_per_owner(self) -> dict[uuid.UUID, int]:
        return {}


def _queue(db: Database, who: Account, cpus: list[float]) -> list[uuid.UUID]:
    ids = []
    with db.session() as session:
        person = session.get(User, who.id)
        assert person is not None
        project = projects.personal(session, person)
        for c in cpus:
            job = Job(
                owner_id=who.id,
                project_id=project.id,
                app="nap",
                version="1",
                entrypoint="main",
                spec={},
                spec_hash="-",
                params={},
                inputs={},
                env={},
                tags={},
                resources=Resources(cpus=c, memory_mb=32),
                executor=_Cpus.name,
            )
            session.add(job)
            session.flush()
            ids.append(job.id)
    return ids


def test_a_lone_users_jobs_go_in_batches_in_order(
    client: TestClient, settings: Settings, user: Account
) -> None:
    db = Database(settings)
    count = 3 * BATCH
    ids = _queue(db, user, [0.01] * count)
    asked: list[str] = []

    def note(_c: Any, _cur: Any, statement: str, *_: Any) -> None:
        if "DISTINCT" in statement:
            asked.append(statement)

    event.listen(db.engine, "before_cursor_execute", note)
    executor = _Cpus(100)
    try:
        assert Scheduler(db, cast(Executor, executor)).dispatch() == count
    finally:
        event.remove(db.engine, "before_cursor_execute", note)
    assert executor.started == ids  # in the order they were queued
    assert len(asked) <= count // BATCH + 2, len(asked)  # who is in line: asked once a batch, not a job
    db.dispose()


def test_a_lone_users_job_that_does_not_fit_keeps_their_later_ones_behind_it(
    client: TestClient, settings: Settings, user: Account
) -> None:
    db = Database(settings)
    small, _big, _after = _queue(db, user, [1, 4, 1])
    executor = _Cpus(3)
    assert Scheduler(db, cast(Executor, executor)).dispatch() == 1
    assert executor.started == [small], "a later, smaller job went ahead of the one that waits"
    db.dispose()


class _Lots(_Cpus):
    """An engine that takes what the dispatcher admits in lots (Slurm's job arrays)."""

    def __init__(self, cpus: float, lot: int) -> None:
        super().__init__(cpus)
        self.submit_lot = lot
        self.lots: list[list[uuid.UUID]] = []

    def submit_many(self, admitted: list[tuple[uuid.UUID, uuid.UUID, Resources]]) -> None:
        self.lots.append([job_id for job_id, _, _ in admitted])
        for job_id, owner_id, resources in admitted:
            self.submit(job_id, owner_id, resources)


def test_an_engine_that_takes_lots_gets_every_admitted_job_once_in_order(
    client: TestClient, settings: Settings, user: Account
) -> None:
    """Full lots as soon as they fill, the rest when the dispatch ends (here: the next job does not fit)."""
    db = Database(settings)
    ids = _queue(db, user, [1.0] * 25 + [50.0] + [1.0])
    executor = _Lots(40, lot=10)
    assert Scheduler(db, cast(Executor, executor)).dispatch() == 25
    assert [len(lot) for lot in executor.lots] == [10, 10, 5]
    assert executor.started == ids[:25]  # each once, in the order they were queued
    db.dispose()
