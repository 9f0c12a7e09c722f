"""Column types and identifiers shared by all models."""

from __future__ import annotations

import os
import threading
import time
import uuid
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Generic, TypeVar

from sqlalchemy import JSON, DateTime, Dialect, String
from sqlalchemy.types import TypeDecorator

from labcloud.registry.spec_parts import Resources


def utcnow() -> datetime:
    return datetime.now(UTC)


_id_lock = threading.Lock()
_last_millis = 0
_sequence = 0


def new_id() -> uuid.UUID:
    """A UUIDv7: unguessable, yet ordered by creation time, so ``ORDER BY id`` means newest/oldest first.

    Within one millisecond a 12-bit sequence keeps ids of this process increasing.
    """
    global _last_millis, _sequence
    with _id_lock:
        millis = time.time_ns() // 1_000_000
        if millis <= _last_millis:
            _sequence += 1
            if _sequence > 0xFFF:  # more than 4096 ids in one ms: borrow the next millisecond
                _last_millis += 1
                _sequence = 0
            millis = _last_millis
        else:
            _last_millis = millis
            _sequence = int.from_bytes(os.urandom(2), "big") & 0x3FF
        sequence = _sequence
    tail = int.from_bytes(os.urandom(8), "big") & ((1 << 62) - 1)
    value = (millis & ((1 << 48) - 1)) << 80 | 0x7 << 76 | sequence << 64 | 0b10 << 62 | tail
    return uuid.UUID(int=value)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC on every backend (SQLite stores naive values; they are UTC by construction)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class ResourcesJSON(TypeDecorator[Resources]):
    """A job's resources: JSON in the database, :class:`~labcloud.registry.spec_parts.Resources` in Python."""

    impl = JSON
    cache_ok = True

    def process_bind_param(self, value: Resources | dict[str, Any] | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        return (value if isinstance(value, Resources) else Resources.model_validate(value)).model_dump()

    def process_result_value(self, value: Any, dialect: Dialect) -> Resources | None:
        return None if value is None else Resources.model_validate(value)


E = TypeVar("E", bound=StrEnum)


class EnumText(TypeDecorator[E], Generic[E]):
    """A StrEnum stored as its text (no database enum type: adding a member needs no migration). Binding
    refuses what is not a member's value; reading gives members back."""

    impl = String
    cache_ok = True

    def __init__(self, enum: type[E], length: int = 32) -> None:
        super().__init__(length)
        self.enum = enum

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else self.enum(value).value

    def process_result_value(self, value: Any, dialect: Dialect) -> E | None:
        return None if value is None else self.enum(value)
