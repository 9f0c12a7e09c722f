"""The Celery executor end to end: a real ``labcloud serve`` (executor celery, 3 s leases) publishing to the
machine's real brokers (Redis on 127.0.0.1:6379, RabbitMQ on 127.0.0.1:5672), and real
``labcloud celery-worker`` processes running the jobs and reporting through the worker API.

Each server uses queues of its own (a random prefix), so leftovers of another run never reach it.
"""

from __future__ import annotations

import hashlib
import inspect
import os
import secrets
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import ADMIN_EMAIL, ADMIN_PASSWORD, bearer, login
from engine_helpers import CeleryCluster, celery_cluster, engine_apps
from labcloud.api.app import create_app
from labcloud.db.models import Job
from labcloud.execution import process
from labcloud.execution.executors.celery.task import TASK_NAME, TaskArgs
from labcloud.services.executor_refs import AttemptRef
from labcloud.settings import Settings
from labcloud.worker.celery_app import create_app as create_worker_app
from labcloud.worker.celery_app import run_job
from test_container_workers import engine_flags, run_small_task
from test_containers import write_container_app
from testing.engines import EngineCLI
from worker_helpers import Cluster, eventually

pytestmark = [pytest.mark.celery, pytest.mark.db_agnostic]

LEASE_S = 3
REDIS = "redis://127.0.0.1:6379/0"
RABBITMQ = "amqp://guest:guest@127.0.0.1:5672//"


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryCluster]:
    with celery_cluster(tmp_path_factory.mktemp("celery-redis"), REDIS) as c:
        yield c


@pytest.fixture(scope="module")
def rabbit_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryCluster]:
    with celery_cluster(tmp_path_factory.mktemp("celery-rabbitmq"), RABBITMQ) as c:
        yield c


def _clean(cluster: CeleryCluster) -> Iterator[CeleryCluster]:
    yield cluster
    cluster.cancel_everything()
    for worker in cluster.workers:
        worker.kill()
    cluster.workers.clear()


@pytest.fixture
def rc(redis_cluster: CeleryCluster) -> Iterator[CeleryCluster]:
    yield from _clean(redis_cluster)


@pytest.fixture
def mq(rabbit_cluster: CeleryCluster) -> Iterator[CeleryCluster]:
    yield from _clean(rabbit_cluster)


def _queue_message(c: Cluster, job_id: str) -> str:
    """What a job waiting in the broker's queue (still queued) says."""
    job = c.job(job_id)
    return str(job["message"]) if job["state"] == "queued" and "Celery" in job["message"] else ""


# ---------------------------------------------------------------------------------------------- tests


def test_the_worker_runs_the_task_the_server_sends() -> None:
    assert list(inspect.signature(run_job).parameters) == list(TaskArgs._fields)
    assert TASK_NAME in create_worker_app(REDIS).tasks


def _labcloud_modules_after(module: str) -> set[str]:
    """The labcloud modules a fresh interpreter holds after importing ``module``."""
    code = f"import sys, {module}; print(' '.join(m for m in sys.modules if m.startswith('labcloud')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_each_side_imports_only_the_task_contract_of_the_other() -> None:
    worker = _labcloud_modules_after("labcloud.worker.celery_app")
    assert worker == {
        "labcloud",
        "labcloud.worker",
        "labcloud.worker.celery_app",
        "labcloud.execution",
        "labcloud.execution.executors",
        "labcloud.execution.executors.celery",
        "labcloud.execution.executors.celery.task",
    }
    server = _labcloud_modules_after("labcloud.execution.executors.celery.executor")
    assert "labcloud.execution.executors.celery.task" in server
    assert not {m for m in server if m.startswith("labcloud.worker")}


@pytest.mark.parametrize("broker", ["redis", "rabbitmq"])
def test_jobs_run_on_celery_workers_with_inputs_outputs_and_log(
    broker: str, request: pytest.FixtureRequest
) -> None:
    c: CeleryCluster = request.getfixturevalue("rc" if broker == "redis" else "mq")
    data = os.urandom(2**20 + 3)
    c.api("PUT", "/files/in/data.bin", expect=201, content=data)
    c.start_celery_worker("basic")
    jobs = [c.submit("e-echo", inputs={"data": "in/data.bin"}) for _ in range(3)]
    failing = c.submit("e-fail")
    for job in jobs:
        done = c.wait_end(job["id"])
        assert done["state"] == "succeeded", (done, c.log(job["id"]))
        assert done["executor"] == "celery" and done["queue"] == f"{c.prefix}.small"
        assert done["attempts"] == 1 and done["progress"] == 1.0
        assert f"hello from {job['id']}" in c.log(job["id"])
        digest = c.http.get(f"/api/v1/jobs/{job['id']}/outputs/data.sha256").text.strip()
        assert digest == hashlib.sha256(data).hexdigest()
        assert [e["to_state"] for e in c.events(job["id"])] == [
            "queued",
            "staging",
            "running",
            "finishing",
            "succeeded",
        ]
    failed = c.wait_end(failing["id"])
    assert (failed["state"], failed["reason"], failed["exit_code"]) == ("failed", "app_error", 3)
    # the engine's worker row holds the jobs; nobody can use its token
    engine = c.worker_info("celery executor")
    assert engine["labels"] == {"executor": "celery"} and engine["state"] == "active"


def test_a_celery_worker_without_a_sandbox_lets_the_job_user_reach_its_job(
    rc: CeleryCluster, open_scratch: Path
) -> None:
    """Run as root with the sandbox off, jobs run as the job user: the worker's own folder (locked 0700)
    lets that user through to its job's folder, and the job runs as that user."""
    rc.start_celery_worker("plain", work_dir=open_scratch / "runs", sandbox="off")
    job = rc.submit("e-id")
    done = rc.wait_end(job["id"])
    assert done["state"] == "succeeded", (done, rc.log(job["id"]))
    assert done["message"].startswith("1 output file"), done
    if os.geteuid() == 0:
        assert "uid=65534" in rc.log(job["id"])  # nobody, not root


def test_each_resource_class_has_its_queue_and_waits_for_a_worker_on_it(rc: CeleryCluster) -> None:
    rc.start_celery_worker("small-only", "small")
    small = rc.submit("e-sleep", {"seconds": 0})
    big = rc.submit("e-big")
    assert rc.wait_end(small["id"])["state"] == "succeeded"
    waiting = eventually(lambda: _queue_message(rc, big["id"]), 20, "the large job to wait in its queue")
    assert waiting == f"waiting in Celery queue {rc.prefix}.large"
    assert rc.job(big["id"])["queue"] == f"{rc.prefix}.large"
    shown = rc.cli("status", big["id"]).stdout  # the command line says where it waits, and why
    assert f"celery ({rc.prefix}.large)" in shown and "waiting in Celery queue" in shown, shown
    rc.start_celery_worker("large", "large")
    done = rc.wait_end(big["id"])
    assert done["state"] == "succeeded", (done, rc.log(big["id"]))
    assert "big" in rc.log(big["id"])


def test_cancel_before_and_while_it_runs(rc: CeleryCluster) -> None:
    queued_in_broker = rc.submit("e-big")  # no worker takes large jobs in this test
    eventually(lambda: _queue_message(rc, queued_in_broker["id"]), 20, "the job to reach the broker")
    rc.api("POST", f"/jobs/{queued_in_broker['id']}/cancel")
    gone = rc.job(queued_in_broker["id"])  # no runner holds it: cancelled at once
    assert gone["state"] == "cancelled" and gone["message"] == "cancelled before it started"

    rc.start_celery_worker("cancel", "small")
    job = rc.submit("e-sleep", {"seconds": 30})
    rc.wait_job(job["id"], lambda j: j["state"] == "running", 30, "the job to run")
    rc.api("POST", f"/jobs/{job['id']}/cancel")
    done = rc.wait_end(job["id"], timeout=30)  # the runner's next heartbeat carries the cancel
    assert done["state"] == "cancelled", done
    assert "cancel requested" in rc.log(job["id"]) and not rc.log(job["id"]).endswith("finished\n")


def test_a_killed_celery_worker_s_job_runs_again_and_the_duplicate_is_fenced(mq: CeleryCluster) -> None:
    first = mq.start_celery_worker("doomed", "small", concurrency=1)
    job = mq.submit("e-sleep", {"seconds": 3})
    mq.wait_job(job["id"], lambda j: j["state"] == "running", 30, "the job to run on the first worker")
    eventually(lambda: f"started {job['id']}" in mq.log(job["id"]), 10, "the first attempt's log")
    first.kill()  # kill -9: the message was never acknowledged, so RabbitMQ delivers it again
    second = mq.start_celery_worker("heir", "small", concurrency=2)
    done = mq.wait_end(job["id"], timeout=60)
    assert done["state"] == "succeeded", (done, mq.log(job["id"]), second.log())
    assert done["attempts"] == 2
    history = mq.events(job["id"])
    assert any(e["reason"] == "worker_lost" for e in history), history
    log = mq.log(job["id"])  # each attempt's log whole, the second after its marker, run once
    assert log.count(f"started {job['id']}\n") == 2 and log.endswith("finished\n"), log
    assert (
        log.split("[labcloud] attempt 2 on worker celery executor\n")[1].count(f"started {job['id']}\n") == 1
    ), log
    # RabbitMQ delivers attempt 1's message again. Either that delivery took the job over once the lease
    # ran out (then it ran attempt 2 itself: "delivered again"), or the lease watch queued the job first and
    # attempt 2 went out as a new message, and the old one, delivered again, found the job moved on (or
    # still held) and ran nothing. Which one happens is a matter of timing; both run the job once.
    if not any("delivered again" in e["message"] for e in history):
        eventually(
            lambda: "nothing to run" in second.log() or "no longer" in second.log() or "held" in second.log(),
            30,
            "the duplicate delivery to be refused",
        )
    assert mq.http.get(f"/api/v1/jobs/{job['id']}/outputs/done.txt").text == "done\n"


def test_a_worker_on_a_killed_one_s_folder_stops_what_it_left_running(rc: CeleryCluster) -> None:
    first = rc.start_celery_worker("left", "small", concurrency=1)
    job = rc.submit("e-sleep", {"seconds": 120})
    rc.wait_job(job["id"], lambda j: j["state"] == "running", 30, "the job to run")
    handles = eventually(
        lambda: list((first.work_dir / "jobs").glob("*/handle.json")), 10, "the job's process handle"
    )
    assert len(handles) == 1, handles
    handle = eventually(
        lambda: process.find_supervisor(handles[0].parent / "status.json"), 10, "the supervisor to be found"
    )
    assert process.is_alive(handle)
    first.kill()  # kill -9: the job's supervised process runs on, orphaned
    assert process.is_alive(handle)
    successor = rc.start_celery_worker("successor", "small", work_dir=first.work_dir)
    assert not process.is_alive(handle) and not handles[0].parent.exists(), successor.log()
    assert "left running by an earlier worker process" in successor.log()
    clash = rc.start_celery_worker("clash", "small", work_dir=first.work_dir, ready=False)
    assert clash.wait_exit(timeout=60) == 1
    assert "another worker is using" in clash.log(), clash.log()


def test_a_job_the_last_leader_never_handed_over_is_sent_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A dispatcher that died between taking a job and publishing it: the next one queues it again."""
    settings.executor = "celery"
    monkeypatch.setenv("LABCLOUD_CELERY_BROKER_URL", REDIS)  # the plugin reads its own settings
    monkeypatch.setenv("LABCLOUD_CELERY_QUEUE_PREFIX", f"lctest-{secrets.token_hex(4)}")  # nobody takes jobs
    engine_apps(settings.effective_apps_dir)
    with TestClient(create_app(settings)) as client:
        headers = bearer(login(client, ADMIN_EMAIL, ADMIN_PASSWORD))
        job_id = client.post("/api/v1/jobs", json={"app": "e-big"}, headers=headers).json()["id"]

        def handed() -> dict[str, Any] | None:
            job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).json()
            return job if job["message"].startswith("waiting in Celery queue") else None

        eventually(handed, 20, "the job to be published")
        ctx = client.app.state.ctx  # type: ignore[attr-defined]
        with ctx.db.session() as session:  # as if the publish had never happened
            job = session.get(Job, uuid.UUID(job_id))
            job.executor_ref = AttemptRef()
        ctx.executors["celery"].recover()
        again = eventually(
            lambda: (j := handed()) and j["attempts"] == 2 and j, 20, "the job to be published again"
        )
        assert again["state"] == "queued"
        events = client.get(f"/api/v1/jobs/{job_id}/events", headers=headers).json()
        assert any("never reached celery; sent again" in e["message"] for e in events), events
        client.post(f"/api/v1/jobs/{job_id}/cancel", headers=headers)


@pytest.mark.containers
def test_a_celery_worker_runs_a_container_app(rc: CeleryCluster, docker_cli: EngineCLI) -> None:
    write_container_app(
        rc.apps_dir, "e-boxed", ["sh", "-c", "echo boxed $(id -u); echo done > {output}/done.txt"]
    )
    rc.start_celery_worker("boxed", options=tuple(engine_flags(docker_cli)))
    job = rc.submit("e-boxed")
    done = rc.wait_end(job["id"], timeout=60)
    log = rc.log(job["id"])
    assert (done["state"], done["executor"]) == ("succeeded", "celery"), (done, log)
    assert "boxed 65534" in log and done["image"].startswith("sha256:"), (done, log)
    assert rc.http.get(f"/api/v1/jobs/{job['id']}/outputs/done.txt").text == "done\n"


@pytest.mark.containers
def test_a_celery_worker_runs_a_tes_task(rc: CeleryCluster, docker_cli: EngineCLI) -> None:
    rc.start_celery_worker("tasks", options=tuple(engine_flags(docker_cli)))
    done = run_small_task(rc, "celery-task")
    assert rc.job(done["id"])["executor"] == "celery"
