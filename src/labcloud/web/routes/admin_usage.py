"""Administration: usage statistics (jobs per app and month, active users, CPU-hours, storage over time),
as tables and charts drawn on the server."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from labcloud.db.types import utcnow
from labcloud.request_scope import DbSession
from labcloud.services import usage_stats
from labcloud.web import charts
from labcloud.web.budget import bar_chart
from labcloud.web.deps import AdminPage, PageRoute
from labcloud.web.rendering import filesize, render

router = APIRouter(route_class=PageRoute, include_in_schema=False)
MONTH_CHOICES = (3, 6, 12, 24, 60)


@router.get("/admin/usage")
def usage_page(
    request: Request,
    _admin: AdminPage,
    session: DbSession,
    months: Annotated[int, Query(ge=1, le=usage_stats.MAX_MONTHS)] = 12,
) -> Response:
    now = utcnow()
    stats = usage_stats.statistics(session, months, now)
    rows = [vars(m) for m in stats.months]
    apps = sorted({app for m in stats.months for app in m.jobs_by_app})
    storage = None
    if stats.storage:
        times = [datetime.combine(s.day, time(12), UTC) for s in stats.storage]  # a day's sample: its noon
        storage = charts.line_chart(
            "storage",
            "Storage used",
            times,
            [float(s.storage_bytes) for s in stats.storage],
            since=stats.since,
            until=now,
            gap_s=timedelta(days=2).total_seconds(),
            fmt=lambda v: filesize(int(v)),
            min_span_s=timedelta(days=7).total_seconds(),
        )
    context = {
        "stats": stats,
        "rows": rows,
        "apps": apps,
        "months": months,
        "choices": MONTH_CHOICES,
        "jobs_chart": bar_chart(rows, "month", "jobs"),
        "users_chart": bar_chart(rows, "month", "active_users"),
        "cpu_chart": bar_chart(rows, "month", "cpu_hours"),
        "storage_chart": storage,
    }
    return render(request, "admin_usage.html", context)
