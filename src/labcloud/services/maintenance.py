"""Maintenance mode: while it is on, nothing new starts and everything already going finishes.

New work is refused with 503, ``Retry-After`` and the operator's message: submits (jobs, reruns, device
sessions, GA4GH TES tasks, the run forms) and new uploads (a raw PUT, a tus or direct upload's
creation). What runs continues: jobs, their reports and outputs, downloads, listings, logins, the upload
an earlier request began. Remote workers drain (a claim hands out nothing) and the dispatchers start no
queued job; switched off, all of it resumes.

The switch is one row in the database, so every replica sees it. Each process keeps what it read for at
most :data:`CACHE_S` seconds, so a hot path (a claim, a submit) does not ask each time; the process that
switches it forgets its copy at once.
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import MaintenanceState
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput, LabcloudError
from labcloud.services import audit

CACHE_S = 2.0
ROW_ID = 1
DEFAULT_MESSAGE = "labcloud is under maintenance; please try again later."
DEFAULT_RETRY_AFTER_S = 300
MAX_MESSAGE = 500
MAX_RETRY_AFTER_S = 7 * 24 * 3600


class UnderMaintenance(LabcloudError):
    status, title, type_slug = 503, "Under maintenance", "maintenance"


@dataclass(frozen=True)
class State:
    enabled: bool
    message: str = ""
    retry_after_s: int = DEFAULT_RETRY_AFTER_S
    changed_at: datetime | None = None
    changed_by: str = ""

    @property
    def shown_message(self) -> str:
        return self.message or DEFAULT_MESSAGE

    def as_dict(self) -> dict[str, Any]:
        return {
            "enabled": self.enabled,
            "message": self.shown_message if self.enabled else self.message,
            "retry_after_s": self.retry_after_s,
            "changed_at": self.changed_at,
            "changed_by": self.changed_by,
        }


OFF = State(False)
_lock = threading.Lock()
_cache: weakref.WeakKeyDictionary[Engine, tuple[float, State]] = weakref.WeakKeyDictionary()


def _of(row: MaintenanceState | None) -> State:
    if row is None:
        return OFF
    return State(row.enabled, row.message, row.retry_after_s, row.changed_at, row.changed_by)


def read(session: Session) -> State:
    """The switch as the database has it now."""
    return _of(session.get(MaintenanceState, ROW_ID))


def current(engine: Engine, max_age_s: float = CACHE_S) -> State:
    """The switch as this process last read it, read again when older than ``max_age_s``."""
    now = time.monotonic()
    with _lock:
        hit = _cache.get(engine)
    if hit is not None and now - hit[0] < max_age_s:
        return hit[1]
    with Session(engine) as session:
        state = read(session)
    with _lock:
        _cache[engine] = (now, state)
    return state


def forget(engine: Engine) -> None:
    with _lock:
        _cache.pop(engine, None)


def refuse_new_work(engine: Engine) -> None:
    """503 with Retry-After and the message while maintenance is on."""
    state = current(engine)
    if state.enabled:
        raise UnderMaintenance(
            state.shown_message,
            headers={"Retry-After": str(state.retry_after_s)},
            extra={"maintenance": True, "retry_after_s": state.retry_after_s},
        )


def check(message: str | None, retry_after_s: int | None, where: str = "body") -> list[dict[str, Any]]:
    """Every problem of a switch's message and Retry-After, as ``{loc, msg}``."""
    errors: list[dict[str, Any]] = []
    if message is not None:
        if len(message) > MAX_MESSAGE:
            errors.append({"loc": [where, "message"], "msg": f"at most {MAX_MESSAGE} characters"})
        elif any(not c.isprintable() for c in message):
            errors.append({"loc": [where, "message"], "msg": "one line of printable text"})
    if retry_after_s is not None and not 1 <= retry_after_s <= MAX_RETRY_AFTER_S:
        errors.append({"loc": [where, "retry_after_s"], "msg": f"from 1 to {MAX_RETRY_AFTER_S} seconds"})
    return errors


def switch(
    db: Database | Engine,
    enabled: bool,
    message: str | None = None,
    retry_after_s: int | None = None,
    where: str = "body",
) -> State:
    """Turn maintenance on or off (the message and Retry-After kept unless given), audited, committed;
    this process sees it at once, the others within :data:`CACHE_S`."""
    errors = check(message, retry_after_s, where)
    if errors:
        raise InvalidInput("The maintenance settings are not valid.", errors=errors)
    engine = db.engine if isinstance(db, Database) else db
    scope = audit.current_scope()
    by = scope.actor.email or scope.actor.label or scope.actor.kind
    for _ in range(3):
        try:
            with Session(engine) as session, session.begin():
                row = session.get(MaintenanceState, ROW_ID, with_for_update=True)
                if row is None:
                    row = MaintenanceState(
                        id=ROW_ID, enabled=False, message="", retry_after_s=DEFAULT_RETRY_AFTER_S
                    )
                    session.add(row)
                was = row.enabled
                row.enabled = enabled
                if message is not None:
                    row.message = message.strip()
                if retry_after_s is not None:
                    row.retry_after_s = retry_after_s
                row.changed_at, row.changed_by = utcnow(), by[:400]
                audit.record(
                    session,
                    "maintenance.on" if enabled else "maintenance.off",
                    "maintenance",
                    None,
                    {"message": row.message, "retry_after_s": row.retry_after_s, "was_on": was},
                )
                session.flush()
                state = _of(row)
        except IntegrityError:  # another switch made the row first: change that one
            continue
        forget(engine)
        return state
    raise LabcloudError("The maintenance switch is changed by someone else at the same time; try again.")
