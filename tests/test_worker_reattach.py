"""A pull worker killed with ``kill -9`` takes up its running jobs again when it restarts (real ``labcloud
serve``, real ``labcloud worker`` processes, the test setup's Docker): the jobs end as the attempt they
were, with their outputs, and nothing runs twice. Containers of attempts that are over are removed from the
worker's engine; those of attempts running elsewhere on the same engine are left alone.
"""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs_helpers import write_app
from labcloud.execution.process import Handle
from live_server import eventually
from test_container_workers import engine_flags
from test_containers import container_names, write_container_app
from testing.engines import IMAGE, EngineCLI
from worker_helpers import Cluster, suite_pull_server

pytestmark = pytest.mark.containers

LEASE_S = 20
SMALL = {"cpus": 1, "memory_mb": 64, "timeout_s": 120}
# What the job prints is not in its command line (which the log shows too).
NAP = "echo $((6*7))-started; sleep {params.seconds}; echo $((6*7+1))-ended; echo done > {output}/done.txt"
SECONDS = {"type": "object", "properties": {"seconds": {"type": "integer"}}, "required": ["seconds"]}


def _apps(apps_dir: Path) -> None:
    write_container_app(apps_dir, "c-nap", ["sh", "-c", NAP], parameters=SECONDS, resources=SMALL)
    write_app(apps_dir, "p-nap", ["sh", "-c", NAP], parameters=SECONDS, resources=SMALL)
    write_container_app(apps_dir, "c-quick", ["true"], resources=SMALL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Cluster]:
    # Leases long enough for a worker to come back before the server gives its jobs to another attempt.
    home = tmp_path_factory.mktemp("reattach-home")
    with suite_pull_server(home, database_url, _apps, lease_seconds=LEASE_S) as c:
        yield c


@pytest.fixture
def cl(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    cluster.reset()


def _begun(cl: Cluster, job_id: str) -> bool:
    return "42-started" in cl.log(job_id)


def _names(cli: EngineCLI) -> list[str]:
    return cli.run("ps", "--all", "--format", "{{.Names}}").stdout.split()


def test_a_worker_killed_with_kill_9_takes_up_its_jobs_again_and_sweeps_its_engine(
    cl: Cluster, docker_cli: EngineCLI
) -> None:
    cli = docker_cli
    flags = engine_flags(cli)
    # A neighbour on the same engine, whose container runs through the other worker's restart.
    neighbour = cl.start_worker("neighbour", *flags, cpus=1)
    quick = cl.submit("c-quick")
    assert cl.wait_end(quick["id"])["state"] == "succeeded"
    elsewhere = cl.submit("c-nap", {"seconds": 30})
    cl.wait_job(elsewhere["id"], lambda _: _begun(cl, elsewhere["id"]), what="the neighbour's job to run")

    token = cl.add_worker("phoenix")
    phoenix = cl.start_worker("phoenix", *flags, token=token, cpus=3)
    boxed = cl.submit("c-nap", {"seconds": 6})
    plain = cl.submit("p-nap", {"seconds": 6})
    orphan = cl.submit("c-nap", {"seconds": 6})  # its supervisor dies with the worker
    for job in (boxed, plain, orphan):
        cl.wait_job(job["id"], lambda _, j=job: _begun(cl, j["id"]), what=f"job {job['id']} to run")
        assert cl.ran_on(job["id"]) == ["phoenix"]

    phoenix.kill()  # SIGKILL: the worker goes, its jobs' supervisors run on
    handle = Handle.from_json((phoenix.work_dir / "jobs" / f"{orphan['id']}-1" / "handle.json").read_text())
    os.kill(handle.pid, signal.SIGKILL)
    record = phoenix.work_dir / "jobs" / f"{boxed['id']}-1" / "resume.json"
    assert record.stat().st_mode & 0o777 == 0o600 and record.stat().st_uid == os.geteuid()
    assert (record.parent.stat().st_mode & 0o777) == 0o700  # the job sees only work/ below it
    assert container_names(cli, boxed["id"]) == [f"labcloud-{boxed['id']}-1"]
    assert container_names(cli, orphan["id"]) == [f"labcloud-{orphan['id']}-1"]  # running on, unsupervised
    # Left on the engine: a container of an attempt that is over, and one that is none of labcloud's.
    stale, other = f"labcloud-{quick['id']}-1", f"not-labcloud-{uuid.uuid4().hex[:8]}"
    labels = [f"--label=org.labcloud.job={quick['id']}", "--label=org.labcloud.attempt=1"]
    for name in (stale, other):
        cli.run("run", "-d", "--name", name, *labels, *cli.run_args, "--network=none", IMAGE, "sleep", "120")
    try:
        phoenix = cl.start_worker("phoenix", *flags, token=token, cpus=3)
        eventually(lambda: stale not in _names(cli), 30, "the stale container to be removed")
        assert other in _names(cli)
        assert container_names(cli, elsewhere["id"]) == [f"labcloud-{elsewhere['id']}-1"]  # still running

        for job in (boxed, plain):
            done = cl.wait_end(job["id"], timeout=60)
            log = cl.log(job["id"])
            assert (done["state"], done["attempts"]) == ("succeeded", 1), (done, log, phoenix.log())
            assert log.count("42-started") == 1 and log.count("43-ended") == 1, log
            assert cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/done.txt").content == b"done\n"
        assert phoenix.log().count("taking it up again after the worker restarted") == 3, phoenix.log()
        # The one whose supervisor died is lost: its container goes, the server runs it again.
        done = cl.wait_end(orphan["id"], timeout=60)
        assert (done["state"], done["attempts"]) == ("succeeded", 2), (done, cl.log(orphan["id"]))
        assert cl.ran_on(orphan["id"]) == ["phoenix", "phoenix"]

        done = cl.wait_end(elsewhere["id"], timeout=60)
        assert (done["state"], done["attempts"]) == ("succeeded", 1), (done, neighbour.log())
        for job in (boxed, orphan, elsewhere):
            eventually(lambda j=job: container_names(cli, j["id"]) == [], 30, "the containers to be removed")
        assert sorted(p.name for p in (phoenix.work_dir / "jobs").iterdir()) == []
    finally:
        cli.run("rm", "--force", stale, other, check=False)


def test_a_restarted_worker_stops_what_the_server_took_back(cl: Cluster, docker_cli: EngineCLI) -> None:
    """An attempt the server no longer counts as the worker's (fenced: cancelled, or its lease ran out) is
    stopped, not taken up; its container goes."""
    flags = engine_flags(docker_cli)
    token = cl.add_worker("fenced")
    worker = cl.start_worker("fenced", *flags, token=token, cpus=1)
    job = cl.submit("c-nap", {"seconds": 60})
    cl.wait_job(job["id"], lambda _: _begun(cl, job["id"]), what="the job to run")
    worker.kill()
    r = cl.http.post(f"/api/v1/jobs/{job['id']}/cancel")
    assert r.status_code == 200, r.text
    ended = cl.wait_end(job["id"], timeout=LEASE_S + 30)  # no worker answers: its lease runs out
    assert ended["state"] == "cancelled", ended
    assert container_names(docker_cli, job["id"]) == [f"labcloud-{job['id']}-1"]
    worker = cl.start_worker("fenced", *flags, token=token, cpus=1)
    eventually(lambda: container_names(docker_cli, job["id"]) == [], 30, "its container to be removed")
    assert "taking it up again" not in worker.log()
    assert "no longer ours" in worker.log(), worker.log()
    assert cl.job(job["id"])["state"] == "cancelled"
