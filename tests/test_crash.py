"""Nothing lost, nothing run twice: hundreds of short jobs while the server is killed (kill -9) at random
moments and started again, on SQLite and on PostgreSQL (the experiment is :mod:`testing.crash`, which the
benchmarks run too).

Every job that ever reached the database must end, its command must have run exactly once (the job's log
is the ledger), and every job must have succeeded with its output, whole.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import backend
from labcloud.settings import Settings
from testing import crash

ADMIN = ("ledger-admin@example.org", "ledger-admin-password")
JOBS = 200
KILLS = 4


@pytest.fixture
def server(settings: Settings, database_url: str) -> Iterator[crash.KillableServer]:
    crash.write_ledger_app(settings.effective_apps_dir)
    env = {
        "LABCLOUD_HOME": str(settings.home),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": ADMIN[0],
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": ADMIN[1],
        "LABCLOUD_LOG_LEVEL": "warning",
        "LABCLOUD_KILL_GRACE_S": "1",
        "LABCLOUD_LOCAL_CPUS": "2",
        "LABCLOUD_SCHEDULER_INTERVAL_S": "0.2",
    }
    if backend() == "postgresql":
        env["LABCLOUD_DATABASE_URL"] = database_url
    srv = crash.KillableServer(env)
    try:
        yield srv
    finally:
        srv.stop()


def test_kill_9_during_submits_and_runs_loses_nothing_and_runs_nothing_twice(
    server: crash.KillableServer,
) -> None:
    account = crash.run(server, ADMIN, jobs=JOBS, kills=KILLS, seed=20261206)
    assert account.submitted == JOBS
    assert not account.stuck, f"jobs that never ended: {dict(account.stuck)}"
    # A submit whose answer the kill swallowed may have been stored: it is a job like the others.
    assert account.jobs >= JOBS
    assert not account.ran_twice, f"commands that did not run exactly once: {account.ran_twice}"
    assert not account.problems, "\n".join(account.problems)
    print(f"{account.jobs} jobs, {KILLS} kills, {account.seconds:.0f} s: attempts {dict(account.attempts)}")
