"""What a project's page shows of its budget: each quota as a bar with its numbers in words, its period and
when it resets; the quota requests with who asked and who decided; and the usage report of the last months
as a table and a bar chart drawn on the server (an inline SVG: no script, no style attribute, so the
Content-Security-Policy stays strict).

The numbers and rules are :mod:`labcloud.services.quotas` and :mod:`labcloud.services.accounting`'s; this
only arranges them for reading.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from labcloud.db.models import Project, QuotaRequest, User
from labcloud.errors import InvalidInput
from labcloud.services import accounting, quota_requests, quotas
from labcloud.services.projects import Access, Action
from labcloud.settings import Settings
from labcloud.web.rendering import amount

# What each resource is called on the page (the API's names stay beside them).
TITLES = {
    "cpu_hours": "CPU time",
    "gpu_hours": "GPU time",
    "concurrent_jobs": "Jobs at once",
    "jobs_per_day": "Jobs started",
}
USAGE_GROUPS = ("user", "app", "month", "executor")  # a project's report; "project" is the admins' one
USAGE_MONTHS = (1, 3, 6, 12)
DEFAULT_MONTHS = 6
CHART_BARS = 20  # the chart shows the biggest; the table has every row


def page_context(
    session: Session,
    settings: Settings,
    project: Project,
    access: Access,
    now: datetime,
    usage_by: str = USAGE_GROUPS[0],
    months: int = DEFAULT_MONTHS,
) -> dict[str, Any]:
    """The project page's quotas, requests and usage (the forms start empty)."""
    since = usage_since(months, now)
    report = accounting.report(session, usage_by, project_id=project.id, since=since)
    return {
        "quotas": quota_views(quotas.states(session, project, settings.default_quotas), now),
        "requests": request_views(session, quota_requests.requests_of(session, project)),
        "may_ask": access.may(Action.RUN),
        "titles": TITLES,
        "resources": quotas.RESOURCES,
        "periods": quotas.PERIODS,
        "usage": report,
        "usage_since": since,
        "usage_months": months,
        "usage_groups": USAGE_GROUPS,
        "month_choices": USAGE_MONTHS,
        "chart": bar_chart(report.rows, usage_by),
        "ask_errors": {},
        "ask_form": {},
        "quota_errors": {},
        "quota_form": {},
        "settings_errors": {},
        "settings_form": {},
    }


def usage_choice(by: str, months: str) -> tuple[str, int]:
    """The report the page was asked for (``?by=&months=``): every bad one at once."""
    errors: list[dict[str, Any]] = []
    if by not in USAGE_GROUPS:
        errors.append({"loc": ["query", "by"], "msg": f"one of {', '.join(USAGE_GROUPS)}"})
    chosen = int(months) if months.isascii() and months.isdigit() else 0
    if chosen not in USAGE_MONTHS:
        errors.append({"loc": ["query", "months"], "msg": f"one of {', '.join(map(str, USAGE_MONTHS))}"})
    if errors:
        said = "; ".join(f"{e['loc'][-1]}: {e['msg']}" for e in errors)
        raise InvalidInput(f"This usage report cannot be shown ({said}).", errors=errors)
    return by, chosen


# --------------------------------------------------------------------------------------------- quotas


@dataclass(frozen=True)
class QuotaView:
    """One quota, ready to show."""

    resource: str
    title: str
    unit: str
    limit: float
    used: float
    held: float  # what unfinished jobs may still take
    left: float
    percent: float  # of the limit used or held; may pass 100
    level: str  # ok, warning, exceeded
    period: str
    period_start: datetime | None
    resets_at: datetime | None
    starts_at: datetime | None
    ends_at: datetime | None
    shut: str  # an allocation outside its dates: "not yet" or "ended" (it gives nothing); else ""

    @property
    def spent(self) -> float:
        return self.used + self.held

    @property
    def shown_percent(self) -> int:
        """Whole percent, rounded down below 100 so that a quota not yet used up never reads 100%."""
        return int(self.percent) if self.percent < 100 else round(self.percent)


def next_reset(period: str, now: datetime) -> datetime | None:
    """When a quota of ``period`` starts its next period (what is used goes back to 0), or None."""
    start = quotas.period_start(period, now)
    if start is None:
        return None
    if period == "daily":
        return start + timedelta(days=1)
    return datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)


def quota_views(states: Iterable[quotas.QuotaState], now: datetime) -> list[QuotaView]:
    views = []
    for state in states:
        q = state.quota
        views.append(
            QuotaView(
                resource=q.resource,
                title=TITLES.get(q.resource, q.resource),
                unit=quotas.UNITS.get(q.resource, ""),
                limit=q.limit,
                used=q.used,
                held=q.reserved,
                left=state.left,
                percent=100 * state.fraction,
                level=state.level,
                period=q.period,
                period_start=q.period_start,
                resets_at=next_reset(q.period, now),
                starts_at=q.starts_at,
                ends_at=q.ends_at,
                shut=_shut(q.period, q.starts_at, q.ends_at, now),
            )
        )
    return views


def _shut(period: str, starts: datetime | None, ends: datetime | None, now: datetime) -> str:
    if period != "allocation":
        return ""
    if starts is not None and now < starts:
        return "not yet"
    return "ended" if ends is not None and now >= ends else ""


# ------------------------------------------------------------------------------------------- requests


@dataclass(frozen=True)
class RequestView:
    request: QuotaRequest
    title: str
    unit: str
    asked_by: str  # a name or email; "" when the account is gone
    decided_by: str


def request_views(session: Session, found: Sequence[QuotaRequest]) -> list[RequestView]:
    """The requests with who asked and who decided (their accounts read once each)."""
    people: dict[uuid.UUID, str] = {}

    def who(user_id: uuid.UUID | None) -> str:
        if user_id is None:
            return ""
        if user_id not in people:
            user = session.get(User, user_id)
            people[user_id] = (user.name or user.email) if user is not None else ""
        return people[user_id]

    return [
        RequestView(
            request=r,
            title=TITLES.get(r.resource, r.resource),
            unit=quotas.UNITS.get(r.resource, ""),
            asked_by=who(r.requested_by),
            decided_by=who(r.decided_by),
        )
        for r in found
    ]


# ---------------------------------------------------------------------------------------------- usage


def usage_since(months: int, now: datetime) -> datetime:
    """The start (UTC) of the month ``months - 1`` months before this one: ``months`` calendar months,
    this one included."""
    index = now.year * 12 + (now.month - 1) - (months - 1)
    return datetime(index // 12, index % 12 + 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class Bar:
    label: str  # shortened to fit; the table has it whole
    value: str  # the number, written out
    y: float
    width: float


@dataclass(frozen=True)
class Chart:
    """A horizontal bar chart of one column of a usage report, in the SVG's own units."""

    bars: list[Bar]
    width: int
    height: int
    label_width: int
    bar_height: int
    left_out: int  # rows not drawn (the smallest)


def bar_chart(rows: Sequence[dict[str, Any]], by: str, column: str = "cpu_hours") -> Chart | None:
    """Bars of ``column`` per row, longest the biggest; None when there is nothing to draw. Months keep
    their order; other groups come biggest first already, and only the biggest :data:`CHART_BARS` are
    drawn."""
    drawn = list(rows[-CHART_BARS:] if by == "month" else rows[:CHART_BARS])
    top = max((float(r.get(column) or 0) for r in drawn), default=0.0)
    if not drawn or top <= 0:
        return None
    labels = [_short(str(row.get(by, "")), 32) for row in drawn]
    width, value_width, bar_height, gap = 640, 90, 18, 8
    label_width = 12 + 8 * max(len(label) for label in labels)  # (about 8 units a character at 13)
    room = width - label_width - value_width
    bars = [
        Bar(
            label=label,
            value=amount(float(row.get(column) or 0)),
            y=i * (bar_height + gap),
            width=round(max(float(row.get(column) or 0) / top * room, 1.0), 1),
        )
        for i, (label, row) in enumerate(zip(labels, drawn, strict=True))
    ]
    height = len(bars) * (bar_height + gap) - gap
    return Chart(bars, width, height, label_width, bar_height, len(rows) - len(drawn))


def _short(text: str, most: int) -> str:
    return text if len(text) <= most else text[: most - 1] + "…"
