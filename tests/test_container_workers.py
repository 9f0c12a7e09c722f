"""Container apps on remote workers: real ``labcloud worker`` processes on the test setup's Docker and Podman,
pulling from a real ``labcloud serve`` (pull executor), on SQLite and on PostgreSQL.

A worker finds its engine from its options (the server's four container settings), reports it and its
images in its heartbeats, and runs container jobs through the same runner as the server's; a worker without
an engine is never given one.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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


TES = "/ga4gh/tes/v1"
TES_ENDED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


def tes_task(cl: Cluster, task: dict[str, Any]) -> str:
    r = cl.http.post(f"{TES}/tasks", json=task)
    assert r.status_code == 200, r.text
    task_id: str = r.json()["id"]
    return task_id


def tes_wait(cl: Cluster, task_id: str, timeout: float = 90) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        found: dict[str, Any] = cl.http.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}).json()
        return found if found["state"] in TES_ENDED else None

    return eventually(ended, timeout, f"task {task_id} to end", interval=0.1)


@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_a_worker_runs_a_tes_task_with_every_kind_of_input_and_output(
    cl: Cluster, kind: str, request: pytest.FixtureRequest
) -> None:
    """The server routes tasks to its default executor (here: pull workers); the worker gets the task's
    layout with its claim, fetches the inputs through the worker API (the inline content too: the server
    serves it), runs the executors in turn and sends back what the outputs point at, which the server
    places in the owner's space and notes in the task's output log."""
    cli: EngineCLI = request.getfixturevalue(f"{kind}_cli")
    cl.api("PUT", "/files/tes/words.txt", content=b"one two three\n")
    cl.api("PUT", "/files/tes/ref/a.txt", content=b"A\n")
    cl.api("PUT", "/files/tes/ref/sub/b.txt", content=b"B\n")
    cl.start_worker(f"tes-{kind}", *engine_flags(cli))
    task_id = tes_task(
        cl,
        {
            "name": f"remote {kind}",
            "inputs": [
                {"url": "labcloud:///tes/words.txt", "path": "/in/words.txt"},
                {"url": "labcloud:///tes/ref", "path": "/in/ref", "type": "DIRECTORY"},
                {"content": "echo from the script\n", "path": "/in/script.sh"},
            ],
            "outputs": [
                {"url": f"labcloud:///tes-out-{kind}/count.txt", "path": "/out/count.txt"},
                {"url": f"labcloud:///tes-out-{kind}/logs", "path": "/work/*.log", "path_prefix": "/work"},
            ],
            "volumes": ["/vol"],
            "executors": [
                {
                    "image": IMAGE,
                    "command": [
                        "sh",
                        "-c",
                        "wc -w < /in/words.txt > /vol/n; sh /in/script.sh; ls -R /in/ref",
                    ],
                },
                {
                    "image": IMAGE,
                    "command": ["sh", "-c", 'echo "words: $(cat /vol/n)"; cat /in/ref/sub/b.txt >&2'],
                    "stdout": "/out/count.txt",
                    "stderr": "/work/step2.log",
                },
            ],
            "resources": {"cpu_cores": 1, "ram_gb": 0.25},
        },
    )
    done = tes_wait(cl, task_id)
    assert done["state"] == "COMPLETE", (done, cl.log(task_id))
    assert cl.ran_on(task_id) == [f"tes-{kind}"]
    assert cl.http.get(f"/api/v1/files/tes-out-{kind}/count.txt").content == b"words: 3\n"
    assert cl.http.get(f"/api/v1/files/tes-out-{kind}/logs/step2.log").content == b"B\n"
    (log,) = done["logs"]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0]
    first = log["logs"][0]["stdout"]  # its stretch of the job's log, where this attempt's lines begin
    assert "from the script" in first and "sub" in first and "words: 3" not in first, first
    assert sorted(o["url"] for o in log["outputs"]) == [
        f"labcloud:///tes-out-{kind}/count.txt",
        f"labcloud:///tes-out-{kind}/logs/step2.log",
    ]
    assert cl.job(task_id)["message"].startswith("2 output files"), cl.job(task_id)
    # the inline content is served to the runner holding the task's job token, to nobody else
    refused = cl.http.get(f"/api/v1/worker/jobs/{task_id}/task-inputs/2")
    assert refused.status_code == 401 and "script" not in refused.text, refused.text

    missing = tes_task(
        cl,
        {
            "outputs": [{"url": "labcloud:///tes-out/never.txt", "path": "/out/never.txt"}],
            "executors": [{"image": IMAGE, "command": ["true"]}],
        },
    )
    failed = tes_wait(cl, missing)
    assert failed["state"] == "SYSTEM_ERROR", failed
    assert "left no file at /out/never.txt" in str(failed["logs"][0]["system_logs"]), failed


def run_small_task(cl: Cluster, name: str) -> dict[str, Any]:
    """A two-step task with inline content in, a file of the space out, to its end (FULL view)."""
    task_id = tes_task(
        cl,
        {
            "name": name,
            "inputs": [{"content": "3 4\n", "path": "/in/numbers"}],
            "outputs": [{"url": f"labcloud:///{name}/sum.txt", "path": "/out/sum.txt"}],
            "volumes": ["/vol"],
            "executors": [
                {"image": IMAGE, "command": ["sh", "-c", "read a b < /in/numbers; echo $((a + b)) > /vol/s"]},
                {
                    "image": IMAGE,
                    "command": ["sh", "-c", "echo sum $(cat /vol/s); id -u"],
                    "stdout": "/out/sum.txt",
                },
            ],
            "resources": {"cpu_cores": 1, "ram_gb": 0.25},
        },
    )
    done = tes_wait(cl, task_id)
    assert done["state"] == "COMPLETE", (done, cl.log(task_id))
    assert cl.http.get(f"/api/v1/files/{name}/sum.txt").content == b"sum 7\n65534\n"
    assert [e["exit_code"] for e in done["logs"][0]["logs"]] == [0, 0], done
    return done


def test_an_app_s_images_say_which_live_workers_have_them(
    cl: Cluster, docker_cli: EngineCLI, podman_cli: EngineCLI
) -> None:
    """From the workers' heartbeats: by repository:tag, and by digest for an image pinned with one (Podman
    knows its images' digests; the imported image has none in Docker)."""
    tag = f"labcloud/only-docker:{uuid.uuid4().hex[:8]}"
    docker_cli.run("tag", IMAGE, tag)
    try:
        digest = podman_cli.run("image", "inspect", "--format", "{{.Digest}}", IMAGE).stdout.strip()
        assert digest.startswith("sha256:"), digest
        write_container_app(cl.apps_dir, "c-tagged", ["true"], image=tag)
        write_container_app(cl.apps_dir, "c-pinned", ["true"], image=f"localhost/labcloud/busybox@{digest}")
        eventually(lambda: cl.http.get("/api/v1/apps/c-pinned").status_code == 200, 30, "the apps to load")
        cl.start_worker("img-docker", *engine_flags(docker_cli))
        cl.start_worker("img-podman", *engine_flags(podman_cli))

        def workers_of(app: str) -> list[dict[str, Any]]:
            [item] = cl.api("GET", f"/apps/{app}/images")["items"]
            found: list[dict[str, Any]] = item["workers"]
            return found

        assert workers_of("c-tagged") == [
            {"name": "img-docker", "kind": "docker", "present": True, "id": image_id(docker_cli)},
            {"name": "img-podman", "kind": "podman", "present": False, "id": None},
        ]
        assert workers_of("c-pinned") == [
            {"name": "img-docker", "kind": "docker", "present": False, "id": None},
            {"name": "img-podman", "kind": "podman", "present": True, "id": image_id(podman_cli)},
        ]
        listed = cl.cli("apps", "images", "c-tagged").stdout
        assert "img-docker" in listed and "img-podman (missing)" in listed, listed
        cl.stop_workers()  # revoked: no longer live
        assert workers_of("c-tagged") == []
        assert "none live" in cl.cli("apps", "images", "c-tagged").stdout
    finally:
        docker_cli.run("rmi", tag, check=False)
