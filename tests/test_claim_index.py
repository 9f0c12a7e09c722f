"""The claim's candidate query stays cheap however long the queue: it walks an index of the queued pull
jobs in claim order and stops at the candidates it looks at (no sort, no scan of the queue)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session
from tests.conftest import Account
from tests.test_worker_api import claim, register, submit

from labcloud.db.models import Job
from labcloud.db.types import new_id
from labcloud.services import claims
from labcloud.services.job_states import JobState

QUEUED = 5000


def _queue(session: Session, template: Job, count: int) -> None:
    skip = {"id", "run_number", "name"}  # (later ids: queued after it)
    row = {c.key: getattr(template, c.key) for c in Job.__table__.columns if c.key not in skip}
    session.execute(insert(Job), [row | {"id": new_id(), "name": f"queued-{i}"} for i in range(count)])


def _plan(session: Session, stmt: Any) -> str:
    dialect = session.get_bind().dialect.name
    compiled = stmt.compile(
        dialect=sqlite.dialect() if dialect == "sqlite" else postgresql.dialect(),
        compile_kwargs={"literal_binds": True},
    )
    sql = str(compiled)
    if dialect == "sqlite":
        sql = sql.replace("-", "")  # uuids as SQLite stores them
        return "\n".join(str(row[-1]) for row in session.execute(text(f"EXPLAIN QUERY PLAN {sql}")))
    session.execute(text("ANALYZE jobs"))
    return "\n".join(str(row[0]) for row in session.execute(text(f"EXPLAIN {sql}")))


def test_the_candidates_come_from_an_index_in_claim_order(
    pclient: TestClient, admin: Account, user: Account
) -> None:
    token = register(pclient, admin, "index")
    first = submit(pclient, user)
    ctx = pclient.app.state.ctx  # type: ignore[attr-defined]
    with ctx.db.session() as session:
        template = session.get(Job, uuid.UUID(first["id"]))
        assert template is not None and template.state == JobState.QUEUED
        _queue(session, template, QUEUED)
    with ctx.db.session() as session:
        plan = _plan(session, claims.candidates_query(uuid.uuid4(), session.get_bind().dialect.name))
    assert "ix_jobs_queued_pull" in plan or "ix_jobs_state_executor_id" in plan, plan
    assert "TEMP B-TREE" not in plan and "Sort" not in plan and "Seq Scan" not in plan, plan
    # and the oldest job is the one taken, read in full
    got = claim(pclient, token)
    assert got is not None and got["id"] == first["id"] and got["spec"] and got["params"]["times"] == 1
    with ctx.db.session() as session:
        queued = session.scalars(select(Job.id).where(Job.state == JobState.QUEUED)).all()
    assert len(queued) == QUEUED
