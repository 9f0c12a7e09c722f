"""Cursor pages: one style for every listing.

Ids are time-ordered UUIDv7s, so keyset pagination on the id alone is stable while rows are added.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from labcloud.errors import InvalidInput

T = TypeVar("T")
MAX_PAGE_SIZE = 200
DEFAULT_PAGE_SIZE = 50


@dataclass
class Page(Generic[T]):
    items: Sequence[T]
    next_cursor: str | None


def encode_cursor(last_id: uuid.UUID) -> str:
    return base64.urlsafe_b64encode(last_id.bytes).decode().rstrip("=")


def decode_cursor(cursor: str) -> uuid.UUID:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        return uuid.UUID(bytes=raw)
    except (binascii.Error, ValueError):
        raise InvalidInput.field(["query", "cursor"], "cursor is not one this server gave out") from None


def paginate(
    session: Session,
    stmt: Select[Any],
    id_column: InstrumentedAttribute[uuid.UUID],
    *,
    limit: int,
    cursor: str | None,
    newest_first: bool,
    rows: bool = False,
) -> Page[Any]:
    """A page of ``stmt``'s entities, or with ``rows`` of its plain rows (each with an ``id``), read on the
    session's connection without the ORM in between."""
    if cursor:
        after = decode_cursor(cursor)
        stmt = stmt.where(id_column < after if newest_first else id_column > after)
    stmt = stmt.order_by(id_column.desc() if newest_first else id_column.asc()).limit(limit + 1)
    found = list(session.connection().execute(stmt) if rows else session.scalars(stmt))
    more = len(found) > limit
    found = found[:limit]
    return Page(found, encode_cursor(found[-1].id) if more and found else None)
