"""Usage statistics for admins, from real jobs run by the local executor, real uploads and the daily storage
samples that housekeeping takes: the API and the admin page."""

from __future__ import annotations

import uuid
from datetime import date, timedelta
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, Account
from jobs_helpers import wait_for_end
from labcloud.db.engine import Database
from labcloud.db.models import Job, Project, UsageRecord, UsageSample
from labcloud.db.types import utcnow
from labcloud.services import housekeeping, usage_stats
from labcloud.settings import Settings
from labcloud.storage import open_storage
from live_server import eventually
from test_web import browser_login


def _run_hello(client: TestClient, account: Account) -> str:
    r = client.post("/api/v1/jobs", json={"app": "hello", "params": {"times": 1}}, headers=account.headers)
    assert r.status_code == 201, r.text
    job = wait_for_end(client, r.json()["id"], account.headers)
    assert job["state"] == "succeeded", job
    return str(job["id"])


def _samples(db: Database) -> list[UsageSample]:
    with db.session() as session:
        return list(session.scalars(select(UsageSample)))


def _last_month(now: Any) -> Any:
    """A moment in the middle of last month."""
    return (now.replace(day=1) - timedelta(days=1)).replace(day=15)


def test_usage_per_month_from_real_jobs_and_samples(
    client: TestClient, admin: Account, user: Account, settings: Settings
) -> None:
    for account in (user, user, admin):
        _run_hello(client, account)
    older = _run_hello(client, user)
    data = b"sample" * 1000
    assert client.put("/api/v1/files/usage/data.bin", content=data, headers=user.headers).status_code == 201

    db = Database(settings)
    try:
        now = utcnow()
        then = _last_month(now)
        with db.session() as session:  # one of the user's jobs (and its accounting) moves to last month
            session.execute(update(Job).where(Job.id == uuid.UUID(older)).values(created_at=then))
            session.execute(
                update(UsageRecord).where(UsageRecord.job_id == uuid.UUID(older)).values(finished_at=then)
            )
        # the daily sample: the leader's housekeeping took today's as it started; each round brings it up
        # to date (now with the upload), one row a day whatever the number of rounds
        eventually(lambda: _samples(db), 30, "the housekeeping loop's first sample")
        storage = open_storage(settings)
        for _ in range(2):
            assert housekeeping.run_once(db, storage, settings).usage_sampled == 1
        with db.session() as session:
            held = int(session.scalar(select(func.sum(Project.storage_used_bytes))) or 0)
            assert [(s.day, s.storage_bytes) for s in _samples(db)] == [(now.date(), held)]
            session.add(
                UsageSample(day=now.date() - timedelta(days=3), storage_bytes=1000, files=1, taken_at=now)
            )
            session.add(UsageSample(day=date(2001, 1, 1), storage_bytes=5, files=1, taken_at=now))  # too old
    finally:
        db.dispose()

    r = client.get("/api/v1/admin/usage", params={"months": 2}, headers=admin.headers)
    assert r.status_code == 200, r.text
    stats = r.json()
    previous, current = stats["months"]
    assert current["month"] == now.strftime("%Y-%m") and previous["month"] == then.strftime("%Y-%m")
    assert (current["jobs"], current["jobs_by_app"], current["active_users"]) == (3, {"hello": 3}, 2)
    assert (previous["jobs"], previous["jobs_by_app"], previous["active_users"]) == (1, {"hello": 1}, 1)
    # CPU-hours are the accounting's: the same as its report per month
    report = client.get("/api/v1/usage", params={"by": "month"}, headers=admin.headers).json()["rows"]
    accounted = {row["month"]: row["cpu_hours"] for row in report}
    assert current["cpu_hours"] > 0 and previous["cpu_hours"] > 0
    assert abs(current["cpu_hours"] - accounted[current["month"]]) < 1e-6
    assert abs(previous["cpu_hours"] - accounted[previous["month"]]) < 1e-6
    # storage over time: the samples of these months, oldest first; today's holds the upload
    days = [(s["day"], s["storage_bytes"]) for s in stats["storage"]]
    assert days == [((now.date() - timedelta(days=3)).isoformat(), 1000), (now.date().isoformat(), held)]
    assert held >= len(data)

    # twelve months: every one listed, the empty ones as zeros
    year = client.get("/api/v1/admin/usage", headers=admin.headers).json()["months"]
    assert len(year) == 12 and year[-1]["month"] == current["month"]
    assert sum(m["jobs"] for m in year) == 4 and year[0]["jobs"] == 0


def test_usage_is_for_admins_with_a_bounded_range(client: TestClient, admin: Account, user: Account) -> None:
    assert client.get("/api/v1/admin/usage", headers=user.headers).status_code == 403
    assert client.get("/api/v1/admin/usage").status_code == 401
    for months in (0, usage_stats.MAX_MONTHS + 1, "x"):
        r = client.get("/api/v1/admin/usage", params={"months": months}, headers=admin.headers)
        assert r.status_code == 422, r.text
        assert r.json()["errors"][0]["loc"] == ["query", "months"]


def test_the_admin_usage_page_draws_its_charts(
    client: TestClient, app: Any, admin: Account, user: Account, settings: Settings
) -> None:
    _run_hello(client, user)
    db = Database(settings)
    try:
        eventually(lambda: _samples(db), 30, "the housekeeping loop's first sample")
    finally:
        db.dispose()
    page = browser_login(app, ADMIN_EMAIL, ADMIN_PASSWORD).get("/admin/usage?months=3")
    assert page.status_code == 200, page.text
    assert 'href="/admin/usage" aria-current="page"' in page.text
    assert page.text.count('class="bars"') == 3  # jobs, active users, CPU-hours
    assert '<th scope="col">hello</th>' in page.text
    assert page.text.count('class="line"') == 1  # storage over time
    assert 'id="usage-storage"' in page.text
    assert browser_login(app, user.email, user.password).get("/admin/usage").status_code in (403, 404)
