"""Admin: usage statistics of the whole installation (:mod:`labcloud.services.usage_stats`)."""

from __future__ import annotations

from datetime import date, datetime

from fastapi import APIRouter, Query
from pydantic import BaseModel, Field

from labcloud.api.deps import Admin, DbSession
from labcloud.api.openapi import problems
from labcloud.http.guard import GuardedRoute
from labcloud.services import usage_stats

router = APIRouter(prefix="/api/v1/admin", tags=["admin"], route_class=GuardedRoute)


class MonthOut(BaseModel):
    month: str = Field(description="YYYY-MM (UTC)")
    jobs: int = Field(description="Jobs submitted in the month.")
    jobs_by_app: dict[str, int] = Field(description="The same, per app, most first.")
    active_users: int = Field(description="Users who submitted at least one job in the month.")
    cpu_hours: float = Field(description="CPU-hours of the attempts that ended in the month (as accounted).")
    gpu_hours: float


class StorageDayOut(BaseModel):
    day: date
    storage_bytes: int = Field(description="Bytes every project's files held that day (a daily sample).")
    files: int


class UsageStatsOut(BaseModel):
    since: datetime = Field(description="The first moment counted: the start of the first month.")
    months: list[MonthOut] = Field(description="Every month since, oldest first, empty ones too.")
    storage: list[StorageDayOut] = Field(description="Daily samples since, oldest first.")


@router.get(
    "/usage",
    response_model=UsageStatsOut,
    responses=problems(422),
    summary="Admin: jobs per app and month, active users, CPU-hours and storage over time",
)
def usage(
    _admin: Admin,
    session: DbSession,
    months: int = Query(
        12, ge=1, le=usage_stats.MAX_MONTHS, description="Calendar months, this one included."
    ),
) -> usage_stats.Statistics:
    return usage_stats.statistics(session, months)
