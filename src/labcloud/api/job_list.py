"""The jobs listing (``GET /api/v1/jobs``), read as plain rows rather than ORM objects: one query for a page
with its projects', owners' and workers' names; why a queued job waits worked out once for each kind of job
on the page, not once per job; and the page checked and written as JSON in one pass of pydantic's own
(what FastAPI would do with the response model, less the objects in between)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import Response
from pydantic import TypeAdapter
from pydantic_core import from_json
from sqlalchemy import Row, Select, Text, cast, select
from sqlalchemy.orm import Session, load_only

from labcloud.api.job_schemas import JobOut
from labcloud.api.schemas import PageOut
from labcloud.db.models import Job, Project, User, Worker
from labcloud.registry.spec_parts import Resources
from labcloud.runtime import Runtime
from labcloud.services import jobs as job_service
from labcloud.services import targets
from labcloud.services.job_states import JobState
from labcloud.services.pagination import paginate

# What JobOut shows, and what its message needs (worker_id, targeted); never the spec, the bulkiest column.
# JSON columns come as their text, parsed by pydantic's parser rather than the json module (a third of the
# time a page took); the resources are checked once, with the rest of the page, by ResourcesOut.
JSON_COLUMNS = ("params", "inputs", "resources", "tags", "usage")
LISTED: tuple[Any, ...] = (
    Job.id, Job.name, Job.run_number, Job.app, Job.version, Job.entrypoint, Job.state, Job.reason,
    Job.message, Job.exit_code, Job.progress, Job.attempts, Job.max_attempts,
    *(cast(getattr(Job, name), Text).label(name) for name in JSON_COLUMNS),
    Job.spec_hash, Job.project_id, Job.owner_id, Job.executor, Job.queue, Job.image, Job.group_id,
    Job.rerun_of, Job.created_at, Job.updated_at, Job.started_at, Job.finished_at, Job.outputs_deleted_at,
    Job.worker_id, Job.targeted,
    Project.slug.label("project"), User.email.label("owner"), Worker.name.label("worker"),
)  # fmt: skip
# What executors read to say why a queued job waits (the spec, for one, is loaded if one asks for it).
WAIT_COLUMNS = (Job.state, Job.attempts, Job.executor, Job.resources, Job.worker_id, Job.targeted)
# The page's statement without its filters, built once.
LISTING: Select[Any] = (
    select(*LISTED)
    .join(Project, Project.id == Job.project_id)
    .join(User, User.id == Job.owner_id)
    .outerjoin(Worker, Worker.id == Job.worker_id)
)
PAGE = TypeAdapter(PageOut[JobOut])


def list_response(
    ctx: Runtime,
    session: Session,
    user: User,
    flt: job_service.JobFilter,
    *,
    limit: int,
    cursor: str | None,
) -> Response:
    stmt = job_service.filtered(session, user, flt, LISTING)
    page = paginate(
        session, stmt, Job.id, limit=limit, cursor=cursor, newest_first=not flt.oldest_first, rows=True
    )
    named = targets.workers_of(session, [row.id for row in page.items if row.targeted])
    messages = wait_messages(ctx, session, page.items)
    items = []
    keys = page.items[0]._fields if page.items else ()
    for row, message in zip(page.items, messages, strict=True):
        item = dict(zip(keys, row, strict=True))
        for name in JSON_COLUMNS:
            item[name] = from_json(item[name]) if item[name] is not None else None
        item["message"], item["workers"] = message, named.get(row.id, [])
        items.append(item)
    body = PAGE.validate_python({"items": items, "next_cursor": page.next_cursor}, from_attributes=True)
    return Response(PAGE.dump_json(body), media_type="application/json")


def wait_messages(ctx: Runtime, session: Session, rows: Sequence[Row[Any]]) -> list[str]:
    """Each row's message as its owner sees it (:meth:`Runtime.message`). A queued first attempt's says why
    it waits, which depends on the job's executor, spec and resources (and, for one that waits for workers
    by name, on those): it is worked out once for each such kind of job on the page."""
    known: dict[tuple[Any, ...], str | None] = {}
    out = []
    for row in rows:
        if row.state != JobState.QUEUED or row.attempts != 0 or row.worker_id is not None:
            out.append(row.message)
            continue
        kind = (row.executor, row.spec_hash, row.resources, row.id if row.targeted else None)
        if kind not in known:
            job = _as_waiting(ctx, session, row)
            known[kind] = ctx.wait_reason(job) if job is not None else None
        out.append(known[kind] or row.message)
    return out


def _as_waiting(ctx: Runtime, session: Session, row: Row[Any]) -> Job | None:
    """The queued job as its executor reads it to say why it waits: made from the page's row (no query), or
    read again where the executor looks at its spec too (the page leaves the spec out)."""
    found = ctx.executors.get(row.executor)
    if found is not None and found.wait_reads_spec:
        return session.get(Job, row.id, options=[load_only(*WAIT_COLUMNS)])
    resources = Resources.model_validate_json(row.resources) if row.resources is not None else None
    values = {"resources": resources} | {
        c.key: getattr(row, c.key) for c in WAIT_COLUMNS if c.key != "resources"
    }
    return Job(id=row.id, **values)
