"""Daily samples of what the installation holds, for the admins' usage statistics (storage over time)."""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Date
from sqlalchemy.orm import Mapped, mapped_column

from labcloud.db.models.base import Base
from labcloud.db.types import UTCDateTime, utcnow


class UsageSample(Base):
    """One a day (UTC), taken by the leader's housekeeping: the bytes and files every project holds."""

    __tablename__ = "usage_samples"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    storage_bytes: Mapped[int] = mapped_column(BigInteger)
    files: Mapped[int] = mapped_column(BigInteger)
    taken_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
