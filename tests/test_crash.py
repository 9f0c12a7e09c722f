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
from live_server import server_env
from testing import crash

ADMIN = ("ledger-admin@example.org", "ledger-admin-password")
JOBS = 200
KILLS = 4


@pytest.fixture
def server(settings: Settings, database_url: str) -> Iterator[crash.KillableServer]:
    crash.write_ledger_app(settings.effective_apps_dir)
    url = database_url if backend() == "postgresql" else None
    env = server_env(settings.home, ADMIN, url, local_cpus="2", scheduler_interval_s="0.2")
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
