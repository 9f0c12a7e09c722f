"""Container apps on remote workers: real ``labcloud worker`` processes on the test setup's Docker and Podman,
pulling from a real ``labcloud serve`` (pull executor), on SQLite and on PostgreSQL.

A worker finds its engine from its options (the server's four container settings), reports it and its
images in its heartbeats, and runs container jobs through the same runner as the server's; a worker without
an engine is never given one.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from jobs_helpers import write_app
from labcloud.execution import engine_options
from labcloud.settings import ContainerSettings
from live_server import eventually
from test_containers import container_names, use_engine, write_container_app
from testing.engines import IMAGE, EngineCLI
from worker_helpers import Cluster, suite_pull_server

pytestmark = pytest.mark.containers

SMALL = {"cpus": 1, "memory_mb": 64, "timeout_s": 60}


def _apps(apps_dir: Path) -> None:
    write_container_app(
        apps_dir,
        "c-copy",
        ["sh", "-c", "echo hello {params.who}; cat {inputs.data} > {output}/copy.txt; id -u > {output}/uid"],
        parameters={"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]},
        inputs={"data": {"type": "file"}},
        resources=SMALL,
    )
    write_app(apps_dir, "c-plain", ["sh", "-c", "echo plain"], resources=SMALL)


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Cluster]:
    with suite_pull_server(tmp_path_factory.mktemp("container-workers-home"), database_url, _apps) as c:
        yield c


@pytest.fixture
def cl(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    cluster.reset()


def engine_flags(cli: EngineCLI) -> list[str]:
    """The ``labcloud worker`` options that give it the test setup's engine (as the server's settings)."""
    settings = ContainerSettings()
    use_engine(settings, cli)  # type: ignore[arg-type]
    return engine_options.runner_options(settings)


def upload(cl: Cluster) -> None:
    cl.api("PUT", "/files/in/data.txt", expect=(200, 201), content=b"some data\n")


def image_id(cli: EngineCLI) -> str:
    found = cli.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    return found if found.startswith("sha256:") else f"sha256:{found}"


@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_a_worker_runs_a_container_job_with_its_inputs_and_outputs(
    cl: Cluster, kind: str, request: pytest.FixtureRequest
) -> None:
    cli: EngineCLI = request.getfixturevalue(f"{kind}_cli")
    upload(cl)
    worker = cl.start_worker(f"boxed-{kind}", *engine_flags(cli))
    assert f"containers {kind}, " in worker.log(), worker.log()
    info = cl.worker_info(f"boxed-{kind}")
    [reported] = info["engines"]
    assert reported["kind"] == kind and any(ref.endswith(IMAGE) for ref in reported["images"]), info
    assert info["engine_problem"] == ""

    job = cl.submit("c-copy", {"who": "there"}, inputs={"data": "in/data.txt"})
    done = cl.wait_end(job["id"], timeout=60)
    log = cl.log(job["id"])
    assert done["state"] == "succeeded", (done, log, worker.log())
    assert cl.ran_on(job["id"]) == [f"boxed-{kind}"]
    assert "hello there" in log and f"$ {kind} run {IMAGE}" in log, log
    assert done["image"] == image_id(cli)  # what ran, by content id: a rerun runs the same
    assert cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/copy.txt").content == b"some data\n"
    assert cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/uid").text.strip() == "65534"  # not root
    # its container is removed (just after the end is recorded)
    eventually(lambda: container_names(cli, job["id"]) == [], 30, "the container to be removed")


def test_a_worker_without_an_engine_never_takes_a_container_job(cl: Cluster, docker_cli: EngineCLI) -> None:
    upload(cl)
    bare = cl.start_worker("bare", "--container-engine", "none")
    assert "containers none (container apps are turned off here" in bare.log(), bare.log()
    boxed = cl.submit("c-copy", {"who": "x"}, inputs={"data": "in/data.txt"})
    plain = cl.submit("c-plain")  # queued after the container job: the worker looked at that one first
    assert cl.wait_end(plain["id"])["state"] == "succeeded"
    assert cl.ran_on(plain["id"]) == ["bare"]
    waiting = cl.job(boxed["id"])
    assert waiting["state"] == "queued" and waiting["attempts"] == 0, waiting
    assert waiting["message"] == "waiting for a worker with a container engine", waiting
    info = cl.worker_info("bare")
    assert info["engines"] == [] and "container_engine = none" in info["engine_problem"], info

    cl.start_worker("boxed", *engine_flags(docker_cli))
    done = cl.wait_end(boxed["id"], timeout=60)
    assert done["state"] == "succeeded", (done, cl.log(boxed["id"]))
    assert cl.ran_on(boxed["id"]) == ["boxed"]
    assert "docker, " in cl.cli("workers").stdout
