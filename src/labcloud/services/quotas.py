"""A project's quotas: how much of each resource it may use, checked when a job is queued and settled when
it ends, so that the project never spends more than its limit.

Resources: ``cpu_hours`` and ``gpu_hours`` (wall time x CPUs or GPUs asked for, as Slurm bills),
``concurrent_jobs`` (jobs queued or running at once) and ``jobs_per_day``. A quota's period is
``monthly`` or ``daily`` (what was used resets at the start of each, in UTC), ``allocation`` (between its
start and end dates, and refused outside them) or ``none``.

A job holds its worst case while it is unfinished (its time limit x its CPUs or GPUs, one concurrent job)
in the quota's ``reserved``; an attempt that ends adds what it really used to ``used`` (by its usage
record, :mod:`.accounting`), and the job's end gives back what it held. Both change only by conditional
``UPDATE``s (``used + reserved + want <= limit``), so concurrent submits at the edge of a quota never
overspend, on either database. A job that does not fit is refused with a 409 naming the quota, what is left
and how to ask for more; or, when its project says so (``over_quota = "cut"``), it is admitted with its
time limit cut to what is left, and ends as ``quota_exceeded`` if it reaches it.

When a hold or a charge brings a quota's use (used and held) to another level than its project was last
told of (80% or all of it), a ``quota.warning`` event is written in the same transaction, once per
crossing: the level told is kept on the quota (``warned_level``) by the same conditional ``UPDATE``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Float, bindparam, case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from labcloud.db.models import Event, Job, Project, Quota
from labcloud.db.types import utcnow
from labcloud.errors import InvalidInput, LabcloudError
from labcloud.registry.spec_parts import Resources
from labcloud.services import audit

RESOURCES = ("cpu_hours", "gpu_hours", "concurrent_jobs", "jobs_per_day")
PERIODS = ("monthly", "daily", "allocation", "none")
TIME = ("cpu_hours", "gpu_hours")
SPENT_AT_SUBMIT = ("jobs_per_day",)  # counted once when queued, never given back
WARNING_EVENT = "quota.warning"
POLICIES = ("refuse", "cut")
WARN_AT = 0.8
MIN_CUT_S = 60.0  # by default, a time limit cut below this is no use: the job is refused instead
UNITS = {
    "cpu_hours": "CPU-hours",
    "gpu_hours": "GPU-hours",
    "concurrent_jobs": "jobs",
    "jobs_per_day": "jobs",
}


class QuotaExceeded(LabcloudError):
    status, title, type_slug = 409, "Quota exceeded", "quota-exceeded"


@dataclass(frozen=True)
class QuotaState:
    """A quota as its project's members see it."""

    quota: Quota
    left: float
    fraction: float  # of the limit used or held

    @property
    def level(self) -> str:
        """ok, warning (80% or more) or exceeded (all of it)."""
        if self.fraction >= 1.0:
            return "exceeded"
        return "warning" if self.fraction >= WARN_AT else "ok"


# --- what a job asks for --------------------------------------------------------------------------------


def worst_case(resources: Resources) -> dict[str, float]:
    """The most a job with these resources can cost each quota."""
    hours = resources.timeout_s / 3600
    return {
        "cpu_hours": hours * float(resources.cpus),
        "gpu_hours": hours * float(resources.gpus),
        "concurrent_jobs": 1.0,
        "jobs_per_day": 1.0,
    }


def period_start(period: str, now: datetime) -> datetime | None:
    """Where the current period began (None: the quota has no periods)."""
    if period == "monthly":
        return datetime(now.year, now.month, 1, tzinfo=UTC)
    if period == "daily":
        return datetime(now.year, now.month, now.day, tzinfo=UTC)
    return None


def _roll(session: Session, quota: Quota, now: datetime) -> None:
    """Start the quota's current period if it has not started yet (what was used resets)."""
    start = period_start(quota.period, now)
    if start is None or (quota.period_start is not None and quota.period_start >= start):
        return
    session.execute(
        update(Quota)
        .where(Quota.id == quota.id, (Quota.period_start.is_(None)) | (Quota.period_start < start))
        .values(used=0.0, period_start=start)
    )
    session.refresh(quota)


def _of(session: Session, project_id: Any) -> list[Quota]:
    stmt = select(Quota).where(Quota.project_id == project_id, Quota.resource.in_(RESOURCES))
    return list(session.scalars(stmt.order_by(Quota.resource)))


# --- holding and giving back ----------------------------------------------------------------------------


def ensure_defaults(session: Session, project: Project, defaults: Mapping[Any, Any]) -> None:
    """Give the project the installation's default quotas (``default_quotas``) it has none of yet."""
    if not defaults:
        return
    have = set(session.scalars(select(Quota.resource).where(Quota.project_id == project.id)))
    for resource, spec in defaults.items():
        if resource in have or resource not in RESOURCES:
            continue
        limit, period = _default(spec)
        try:
            with session.begin_nested():
                session.add(Quota(project_id=project.id, resource=resource, limit=limit, period=period))
                session.flush()
        except IntegrityError:  # given by a concurrent request a moment ago
            pass


def _default(spec: Any) -> tuple[float, str]:
    if isinstance(spec, dict):
        return float(spec["limit"]), str(spec.get("period", "monthly"))
    return float(spec.limit), str(spec.period)


def reserve(
    session: Session,
    project: Project,
    job: Job,
    defaults: Mapping[Any, Any] | None = None,
    min_cut_s: float = MIN_CUT_S,
    count: int = 1,
) -> None:
    """Hold the job's worst case in each of its project's quotas (the job is about to be queued, in the
    caller's transaction): QuotaExceeded when one cannot give it, or the job's time limit is cut to what is
    left when the project says so (not below ``min_cut_s``). ``defaults``: the installation's default
    quotas. ``count``: as many jobs alike as that (a sweep's), held together, all or none; ``job`` gets one
    job's hold (give it to each; a project that cuts time limits takes them one by one)."""
    if count > 1 and project.over_quota == "cut":
        raise ValueError("a project that cuts time limits holds each job on its own")
    ensure_defaults(session, project, defaults or {})
    quotas = _of(session, project.id)
    if not quotas:
        job.quota_hold = None
        return
    now = utcnow()
    needs = worst_case(job.resources)
    for quota in quotas:
        _roll(session, quota, now)
        if needs[quota.resource] > 0:  # (an allocation of what the job does not use is no matter)
            _check_dates(quota, project, now)
    if project.over_quota == "cut":
        _cut_to_fit(job, quotas, min_cut_s)
    want = worst_case(job.resources)
    asked = {q.id: (q, want[q.resource]) for q in quotas if want[q.resource] > 0}
    if asked:
        # One statement holds it in every quota, each only if it fits: all rows or the job does not fit.
        amount = case({i: a * count for i, (_, a) in asked.items()}, value=Quota.id, else_=0.0)
        spent_now = Quota.resource.in_(SPENT_AT_SUBMIT)
        held = session.scalars(
            update(Quota)
            .where(Quota.id.in_(list(asked)), Quota.used + Quota.reserved + amount <= Quota.limit + 1e-9)
            .values(
                used=case((spent_now, Quota.used + amount), else_=Quota.used),
                reserved=case((spent_now, Quota.reserved), else_=Quota.reserved + amount),
            )
            .returning(Quota.id)
            .execution_options(synchronize_session=False)
        ).all()
        refused = [asked[i] for i in asked if i not in set(held)]
        if refused:  # (the request's transaction undoes the holds that fitted)
            quota, a = refused[0]
            session.refresh(quota)
            raise _refusal(project, quota, a * count, count)
        _warn(session, project.id, [q.resource for q, _ in asked.values()], project.slug)
    hold = {q.resource: a for q, a in asked.values() if q.resource not in SPENT_AT_SUBMIT}
    if job.quota_hold and "cut_timeout_s" in job.quota_hold:
        hold["cut_timeout_s"] = job.quota_hold["cut_timeout_s"]
    job.quota_hold = hold or None


def _check_dates(quota: Quota, project: Project, now: datetime) -> None:
    if quota.period != "allocation":
        return
    if (quota.starts_at is not None and now < quota.starts_at) or (
        quota.ends_at is not None and now >= quota.ends_at
    ):
        span = f"{_day(quota.starts_at)} to {_day(quota.ends_at)}"
        raise QuotaExceeded(
            f"Project {project.slug!r}: its {quota.resource} allocation runs from {span}; it gives nothing "
            "now. Ask the project's managers or an admin for a new allocation.",
            extra={"quota": quota.resource, "project": project.slug, "left": 0.0, "limit": quota.limit},
        )


def _day(moment: datetime | None) -> str:
    return moment.date().isoformat() if moment is not None else "-"


def _cut_to_fit(job: Job, quotas: list[Quota], min_cut_s: float) -> None:
    """Cut the job's time limit to what the time quotas have left (not below ``min_cut_s``: then it does
    not fit, and is refused)."""
    resources = job.resources
    allowed = float(resources.timeout_s)
    for quota in quotas:
        per_hour = float(resources.cpus) if quota.resource == "cpu_hours" else float(resources.gpus)
        if quota.resource not in TIME or per_hour <= 0:
            continue
        left = max(quota.limit - quota.used - quota.reserved, 0.0)
        allowed = min(allowed, left / per_hour * 3600)
    if allowed >= resources.timeout_s:
        return
    if allowed < min_cut_s:
        return  # the reservation refuses it, naming the quota
    cut = math.floor(allowed)
    job.resources = resources.model_copy(update={"timeout_s": cut})
    job.quota_hold = {"cut_timeout_s": float(cut)}


def _refusal(project: Project, quota: Quota, amount: float, count: int = 1) -> QuotaExceeded:
    left = max(quota.limit - quota.used - quota.reserved, 0.0)
    unit = UNITS[quota.resource]
    what = "at most" if quota.resource in TIME else "up to"
    resets = period_start(quota.period, utcnow())
    when = ""
    if resets is not None:
        when = " this month" if quota.period == "monthly" else " today"
    return QuotaExceeded(
        f"Project {project.slug!r} has {_num(left)} of its {_num(quota.limit)} {unit} of {quota.resource} "
        f"left{when}; {'this job needs' if count == 1 else f'these {count} jobs need'} {what} "
        f"{_num(amount)}. Ask the project's managers or an admin for more "
        "(a quota request), or ask for less (a shorter time limit, fewer CPUs).",
        extra={
            "quota": quota.resource,
            "project": project.slug,
            "left": round(left, 6),
            "limit": quota.limit,
        },
    )


def _num(value: float) -> str:
    return f"{value:.6g}"


def release(session: Session, job: Job) -> None:
    """The job has ended: give back what it held (what it used is charged by its usage records)."""
    hold = {r: a for r, a in (job.quota_hold or {}).items() if r in RESOURCES and a > 0}
    if hold:
        back = case(hold, value=Quota.resource, else_=0.0)
        session.execute(
            update(Quota)
            .where(Quota.project_id == job.project_id, Quota.resource.in_(list(hold)))
            .values(reserved=case((Quota.reserved - back < 0, 0.0), else_=Quota.reserved - back))
            .execution_options(synchronize_session=False)
        )
    if job.quota_hold:
        session.execute(update(Job).where(Job.id == job.id).values(quota_hold=None))
        job.quota_hold = None


# The statements of every job's end, built once (with their parameters bound at each use).
_CHARGE = (
    update(Quota)
    .where(Quota.project_id == bindparam("project"), Quota.resource == bindparam("the_resource"))
    .values(used=Quota.used + bindparam("amount", type_=Float))
)
_spent = Quota.used + Quota.reserved
_level = case(
    (Quota.limit <= 0, 100),
    (_spent >= Quota.limit - 1e-9, 100),
    (_spent >= Quota.limit * WARN_AT, 80),
    else_=0,
)
_WARN = (
    update(Quota)
    .where(
        Quota.project_id == bindparam("project"),
        Quota.resource.in_(bindparam("resources", expanding=True)),
        _level != Quota.warned_level,
    )
    .values(warned_level=_level)
    .returning(Quota.resource, Quota.limit, Quota.used, Quota.reserved, Quota.warned_level)
    .execution_options(synchronize_session=False)
)


def charge(session: Session, project_id: Any, cpu_hours: float, gpu_hours: float) -> None:
    """Add what an attempt used to its project's time quotas (whatever their limit: it was spent)."""
    spent = {r: a for r, a in (("cpu_hours", cpu_hours), ("gpu_hours", gpu_hours)) if a > 0}
    if spent:
        session.connection().execute(
            _CHARGE, [{"project": project_id, "the_resource": r, "amount": a} for r, a in spent.items()]
        )
        _warn(session, project_id, list(spent), None)


def _warn(session: Session, project_id: Any, resources: list[str], slug: str | None) -> None:
    """Note the level of use of these quotas (one statement, which touches only those whose level moved)
    and write a quota.warning event for each that reached 80% or all of its limit."""
    moved = session.execute(_WARN, {"project": project_id, "resources": resources}).all()
    told = [row for row in moved if row.warned_level > 0]
    if not told:
        return
    if slug is None:
        slug = session.scalar(select(Project.slug).where(Project.id == project_id))
    for row in told:
        session.add(
            Event(
                kind=WARNING_EVENT,
                project_id=project_id,
                payload={
                    "quota": {
                        "project": slug,
                        "resource": row.resource,
                        "limit": row.limit,
                        "used": row.used,
                        "held": row.reserved,
                        "level": "exceeded" if row.warned_level >= 100 else "warning",
                        "percent": row.warned_level,
                    }
                },
                fanned_out=False,
            )
        )


def was_cut(job: Job) -> float | None:
    """The time limit a quota cut the job to, or None."""
    return (job.quota_hold or {}).get("cut_timeout_s")


# --- reading and setting --------------------------------------------------------------------------------


def states(session: Session, project: Project, defaults: Mapping[Any, Any] | None = None) -> list[QuotaState]:
    ensure_defaults(session, project, defaults or {})
    now = utcnow()
    found = []
    for quota in _of(session, project.id):
        _roll(session, quota, now)
        spent = quota.used + quota.reserved
        left = max(quota.limit - spent, 0.0)
        fraction = spent / quota.limit if quota.limit > 0 else 1.0
        found.append(QuotaState(quota, left, fraction))
    return found


def set_quota(
    session: Session,
    project: Project,
    resource: str,
    limit: float,
    period: str,
    starts_at: datetime | None = None,
    ends_at: datetime | None = None,
) -> Quota:
    """Set (or make) the project's quota of ``resource``; what it has used so far stays. Every bad field
    at once."""
    errors = []
    if resource not in RESOURCES:
        errors.append({"loc": ["path", "resource"], "msg": f"one of {', '.join(RESOURCES)}"})
    if not limit >= 0 or math.isinf(limit):
        errors.append({"loc": ["body", "limit"], "msg": "a number from 0 up"})
    if period not in PERIODS:
        errors.append({"loc": ["body", "period"], "msg": f"one of {', '.join(PERIODS)}"})
    if period == "allocation" and (starts_at is None or ends_at is None or ends_at <= starts_at):
        errors.append({"loc": ["body", "ends_at"], "msg": "an allocation needs starts_at before ends_at"})
    if period != "allocation" and (starts_at is not None or ends_at is not None):
        errors.append({"loc": ["body", "starts_at"], "msg": "only an allocation has dates"})
    if errors:
        raise InvalidInput("Some fields of the quota are not valid.", errors=errors)
    quota = session.scalar(select(Quota).where(Quota.project_id == project.id, Quota.resource == resource))
    if quota is None:
        # (jobs queued before the quota existed hold nothing in it; their attempts are charged as they end)
        quota = Quota(project_id=project.id, resource=resource, used=0.0, reserved=0.0)
        session.add(quota)
    if quota.period != period:
        quota.period_start = None  # a new kind of period starts now
    was = None if quota.limit is None else {"limit": quota.limit, "period": quota.period}
    quota.limit, quota.period, quota.starts_at, quota.ends_at = float(limit), period, starts_at, ends_at
    session.flush()
    details = {
        "project": project.slug,
        "resource": resource,
        "from": was,
        "limit": float(limit),
        "period": period,
    }
    audit.record(session, "quota.set", "project", project.id, details)
    return quota


def remove_quota(session: Session, project: Project, resource: str) -> None:
    quota = _quota(session, project, resource)
    if quota is not None:
        details = {
            "project": project.slug,
            "resource": resource,
            "limit": quota.limit,
            "period": quota.period,
        }
        session.delete(quota)
        session.flush()
        audit.record(session, "quota.removed", "project", project.id, details)


def _quota(session: Session, project: Project, resource: str) -> Quota | None:
    return session.scalar(select(Quota).where(Quota.project_id == project.id, Quota.resource == resource))
