"""Container apps on real engines (Docker and Podman, started by the test setup): they run, stream their log,
keep their outputs and record the image they ran, with the same limits and isolation as a process job."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import Account, backend
from jobs_helpers import follow_log, wait_for_end
from labcloud.execution.process import Handle
from labcloud.settings import Settings
from live_server import Server, eventually, login_headers, server_env
from test_web import browser_login, csrf_of
from testing.crash import KillableServer
from testing.engines import IMAGE, EngineCLI

# What containers do does not depend on the database: the SQLite pass runs these.
pytestmark = [pytest.mark.containers, pytest.mark.db_agnostic]


@pytest.fixture(params=["docker", "podman"])
def engine(request: pytest.FixtureRequest) -> EngineCLI:
    cli: EngineCLI = request.getfixturevalue(f"{request.param}_cli")
    return cli


def use_engine(settings: Settings, cli: EngineCLI) -> None:
    settings.container_engine = cli.kind  # type: ignore[assignment]
    if cli.kind == "docker":
        settings.docker_host = cli.argv[cli.argv.index("-H") + 1]
    else:
        settings.podman_options = cli.argv[1:]
    # This machine's hard limits are below Podman's defaults (the test Docker daemon has them as defaults).
    pairs = zip(cli.run_args[::2], cli.run_args[1::2], strict=True)
    settings.container_run_options = [f"{option}={value}" for option, value in pairs]


def engine_socket(cli: EngineCLI) -> str:
    return cli.argv[cli.argv.index("-H") + 1].removeprefix("unix://") if cli.kind == "docker" else ""


def write_container_app(apps_dir: Path, name: str, command: list[str], **entry: Any) -> None:
    apps_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        "name": name,
        "versions": {
            "1.0": {
                "entrypoints": {
                    "main": {
                        "runtime": "container",
                        "image": entry.pop("image", IMAGE),
                        "command": command,
                        "resources": entry.pop("resources", {"cpus": 1, "memory_mb": 64, "timeout_s": 60}),
                        **entry,
                    }
                }
            }
        },
    }
    (apps_dir / f"{name}.yaml").write_text(json.dumps(spec))


@pytest.fixture
def running(
    settings: Settings, engine: EngineCLI, request: pytest.FixtureRequest
) -> tuple[TestClient, Settings, EngineCLI]:
    """The test server, started after its settings name the engine (tests list this before ``user``)."""
    use_engine(settings, engine)
    client: TestClient = request.getfixturevalue("client")
    return client, settings, engine


def submit(client: TestClient, user: Account, app: str, **body: Any) -> str:
    r = client.post("/api/v1/jobs", json={"app": app, **body}, headers=user.headers)
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    return job_id


def test_a_container_job_runs_streams_keeps_its_outputs_and_records_its_image(
    running: tuple[TestClient, Settings, EngineCLI], user: Account
) -> None:
    client, settings, cli = running
    write_container_app(
        settings.effective_apps_dir,
        "greet",
        [
            "sh",
            "-c",
            "echo hello {params.who}; echo threads=$THREADS; echo '::progress 0.5'; "
            "echo $GREETING > {output}/greeting.txt",
        ],
        parameters={"type": "object", "properties": {"who": {"type": "string"}}, "required": ["who"]},
        container={"env": {"GREETING": "hi {params.who}", "THREADS": "{resources.cpus}"}},
    )
    job_id = submit(client, user, "greet", params={"who": "--privileged; world"}, resources={"cpus": 2})
    log = follow_log(client, job_id, user.headers)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
    assert job["state"] == "succeeded", (job, log)
    assert "hello --privileged; world" in log  # a parameter is an argument, never an engine flag
    assert "threads=2" in log  # {resources.cpus}: what the job was given
    assert job["image"].startswith("sha256:") and len(job["image"]) == 71
    assert job["usage"]["peak_memory_mb"] > 0 and job["usage"]["cpu_s"] > 0, job["usage"]  # the engine's
    assert job["progress"] == 1.0
    out = client.get(f"/api/v1/jobs/{job_id}/outputs", headers=user.headers).json()
    names = [item["path"].rsplit("/", 1)[-1] for item in out]
    assert names == ["greeting.txt"], (out, job, log)
    # The container is removed once the job is over (just after: its end is not held up by the engine).
    eventually(lambda: container_names(cli, job_id) == [], 30, "the container to be removed")


def test_a_container_is_isolated(running: tuple[TestClient, Settings, EngineCLI], user: Account) -> None:
    client, settings, cli = running
    socket = engine_socket(cli) or "/nonexistent"
    probe = (
        "id -u; id -g; grep CapEff /proc/self/status; "
        "touch /probe 2>/dev/null && echo root-writable || echo root-read-only; "
        "wc -l < /proc/net/dev; "
        f"test -e {socket} && echo engine-socket-visible || echo engine-socket-hidden; "
        "touch /labcloud/inputs/x 2>/dev/null && echo inputs-writable || echo inputs-read-only; "
        "touch {output}/ok && echo output-writable"
    )
    write_container_app(
        settings.effective_apps_dir, "probe", ["sh", "-c", probe], inputs={"data": {"type": "file"}}
    )
    client.put(
        "/api/v1/files/in.txt", content=b"data", headers={**user.headers, "Content-Type": "text/plain"}
    )
    job_id = submit(client, user, "probe", inputs={"data": "in.txt"})
    log = follow_log(client, job_id, user.headers)
    assert client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()["state"] == "succeeded", log
    lines = [line.strip() for line in log.splitlines() if not line.startswith("[labcloud]")]
    assert lines[:2] == ["65534", "65534"], log
    assert "CapEff:\t0000000000000000" in lines, log
    assert "root-read-only" in lines, log
    assert "3" in lines, log  # /proc/net/dev: two header lines and lo, nothing else (no network)
    assert "engine-socket-hidden" in lines and "inputs-read-only" in lines and "output-writable" in lines, log


def test_limits_end_a_container_as_they_end_a_process(
    running: tuple[TestClient, Settings, EngineCLI], user: Account
) -> None:
    client, settings, cli = running
    apps = settings.effective_apps_dir
    write_container_app(apps, "slow", ["sleep", "60"], resources={"cpus": 1, "memory_mb": 64, "timeout_s": 2})
    write_container_app(
        apps,
        "hungry",
        ["sh", "-c", "x=aaaaaaaa; while true; do x=$x$x; done"],
        resources={"cpus": 1, "memory_mb": 32, "timeout_s": 60},
    )
    write_container_app(apps, "nap", ["sleep", "60"])
    write_container_app(apps, "missing", ["true"], image="labcloud/not-built:1")
    write_container_app(apps, "fails", ["sh", "-c", "exit 3"])
    write_container_app(apps, "nocmd", ["no-such-program"])
    names = ("slow", "hungry", "nap", "missing", "fails", "nocmd")
    slow, hungry, nap, missing, fails, nocmd = (submit(client, user, a) for a in names)
    eventually(
        lambda: client.get(f"/api/v1/jobs/{nap}", headers=user.headers).json()["state"] == "running",
        60,
        "the container job to run",
    )
    assert client.post(f"/api/v1/jobs/{nap}/cancel", headers=user.headers).status_code == 200
    ends = {
        job_id: wait_for_end(client, job_id, user.headers)
        for job_id in (slow, hungry, nap, missing, fails, nocmd)
    }
    assert (ends[slow]["state"], ends[slow]["reason"]) == ("failed", "timeout"), ends[slow]
    assert (ends[hungry]["state"], ends[hungry]["reason"]) == ("failed", "out_of_memory"), ends[hungry]
    assert ends[nap]["state"] == "cancelled", ends[nap]
    assert (ends[missing]["state"], ends[missing]["reason"]) == ("failed", "image_unavailable"), ends[missing]
    assert "labcloud/not-built:1" in ends[missing]["message"], ends[missing]
    assert (ends[fails]["state"], ends[fails]["reason"], ends[fails]["exit_code"]) == (
        "failed",
        "app_error",
        3,
    )
    assert (ends[nocmd]["state"], ends[nocmd]["reason"]) == ("failed", "system_error"), ends[nocmd]
    assert "could not be started" in ends[nocmd]["message"] and "no-such-program" in ends[nocmd]["message"]
    eventually(lambda: all(container_names(cli, j) == [] for j in ends), 30, "the containers to be removed")


@pytest.fixture
def no_engine(settings: Settings, request: pytest.FixtureRequest) -> TestClient:
    settings.container_engine = "none"
    client: TestClient = request.getfixturevalue("client")
    return client


def test_without_an_engine_container_apps_are_listed_unavailable_and_fail_clearly(
    no_engine: TestClient, settings: Settings, user: Account
) -> None:
    write_container_app(settings.effective_apps_dir, "boxed", ["true"])
    client = no_engine
    apps = {a["name"]: a for a in client.get("/api/v1/apps", headers=user.headers).json()["items"]}
    boxed = apps["boxed"]["versions"]["1.0"]["entrypoints"]["main"]
    assert boxed["available"] is False and "container_engine = none" in boxed["unavailable_reason"]
    hello = apps["hello"]["versions"][apps["hello"]["latest_version"]]["entrypoints"]
    assert all(ep["available"] for ep in hello.values())
    job = wait_for_end(client, submit(client, user, "boxed"), user.headers)
    assert (job["state"], job["reason"]) == ("failed", "image_unavailable"), job
    assert "container_engine = none" in job["message"]


# --------------------------------------------------------------------------------- kill -9 of the server

ADMIN = ("crash-admin@example.org", "crash-admin-password")


@pytest.fixture
def killable(settings: Settings, database_url: str, engine: EngineCLI) -> Iterator[KillableServer]:
    use_engine(settings, engine)
    env = server_env(
        settings.home,
        ADMIN,
        database_url if backend() == "postgresql" else None,
        container_engine=settings.container_engine,
        docker_host=settings.docker_host,
        podman_options=json.dumps(settings.podman_options),
        container_run_options=json.dumps(settings.container_run_options),
    )
    srv = KillableServer(env)
    try:
        yield srv
    finally:
        srv.stop()


def container_names(cli: EngineCLI, job_id: str) -> list[str]:
    return cli.run(
        "ps", "--all", "--filter", f"name=labcloud-{job_id}", "--format", "{{.Names}}"
    ).stdout.split()


def _follow(
    srv: KillableServer, job_id: str, headers: dict[str, str], until: str | None = None
) -> dict[str, Any]:
    """Follow the job's log until a line ``until`` (or the end); then the job."""
    url = f"{srv.url}/api/v1/jobs/{job_id}/logs"
    with httpx.stream("GET", url, params={"follow": "true"}, headers=headers, timeout=120) as r:
        for line in r.iter_lines():
            if (until is not None and line == f"data: {until}") or line.startswith("event: end"):
                break
    job: dict[str, Any] = httpx.get(f"{srv.url}/api/v1/jobs/{job_id}", headers=headers).json()
    return job


def test_a_container_job_survives_kill_9_of_the_server_and_a_lost_one_is_cleaned_up(
    killable: KillableServer, settings: Settings, engine: EngineCLI
) -> None:
    write_container_app(settings.effective_apps_dir, "nap", ["sh", "-c", "echo begin; sleep 2; echo end"])
    killable.start()
    headers = login_headers(killable.url, *ADMIN)
    kept = httpx.post(f"{killable.url}/api/v1/jobs", json={"app": "nap"}, headers=headers).json()["id"]
    _follow(killable, kept, headers, until="begin")
    killable.kill()
    assert container_names(engine, kept) == [f"labcloud-{kept}-1"]  # the container runs on without the server
    killable.start()  # re-attaches through the job's supervisor
    headers = login_headers(killable.url, *ADMIN)
    job = _follow(killable, kept, headers)
    assert (job["state"], job["attempts"]) == ("succeeded", 1), job
    eventually(lambda: container_names(engine, kept) == [], 30, "the container to be removed")

    lost = httpx.post(f"{killable.url}/api/v1/jobs", json={"app": "nap"}, headers=headers).json()["id"]
    _follow(killable, lost, headers, until="begin")
    killable.kill()
    handle = Handle.from_json((settings.home / "jobs" / lost / "attempt-1" / "handle.json").read_text())
    os.kill(handle.pid, signal.SIGKILL)  # its supervisor goes too: the container is left alone, running
    assert container_names(engine, lost) == [f"labcloud-{lost}-1"]
    killable.start()
    headers = login_headers(killable.url, *ADMIN)
    job = _follow(killable, lost, headers)
    assert (job["state"], job["attempts"]) == ("succeeded", 2), job  # run again, once
    # the first attempt's container was removed, not left running (nor the second's, once over)
    eventually(lambda: container_names(engine, lost) == [], 30, "the containers to be removed")


def test_the_container_demo_app_counts_words(
    running: tuple[TestClient, Settings, EngineCLI], user: Account
) -> None:
    client, _, _ = running
    text = b"the cat and the hat\nThe end.\n"
    client.put(
        "/api/v1/files/story.txt", content=text, headers={**user.headers, "Content-Type": "text/plain"}
    )
    job_id = submit(client, user, "wordcount", inputs={"text": "story.txt"}, params={"top": 2})
    log = follow_log(client, job_id, user.headers)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
    assert job["state"] == "succeeded", (job, log)
    outputs = {
        item["path"].rsplit("/", 1)[-1]: item
        for item in client.get(f"/api/v1/jobs/{job_id}/outputs", headers=user.headers).json()
    }
    assert set(outputs) == {"counts.txt", "top-words.txt"}
    counts = client.get(f"/api/v1/jobs/{job_id}/outputs/counts.txt", headers=user.headers).text
    assert counts.split() == ["lines", "2", "words", "7", "bytes", str(len(text))]
    top = client.get(f"/api/v1/jobs/{job_id}/outputs/top-words.txt", headers=user.headers).text
    assert top.split()[:2] == ["3", "the"]


def test_the_pages_say_when_container_apps_cannot_run(no_engine: TestClient, user: Account) -> None:
    browser = browser_login(no_engine.app, user.email, user.password)
    catalogue = browser.get("/apps").text
    assert "which this server cannot start: container apps are turned off here" in catalogue
    page = browser.get("/apps/wordcount").text
    assert "Runs in the container image <code>labcloud/busybox:1</code>" in page
    assert "This server cannot start containers" in page
    assert "cannot start" not in browser.get("/apps/hello").text


# A container's attacks on what labcloud does with its output folder (which is bound to a host folder):
# links to host files and folders, hard links, a fifo, names that are not valid. None of it may be followed.
ESCAPE = (
    'out=/labcloud/output; canary="$1"; echo fine > $out/ok.txt; '
    'ln -s "$canary/secret.txt" $out/stolen.txt; ln -s "$canary" $out/dir; '
    "echo mine > $out/mine.txt; ln $out/mine.txt $out/linked.txt; mkfifo $out/pipe; "
    "printf x > \"$out/$(printf 'bad\\nname.txt')\"; echo attacked"
)


def test_a_container_cannot_escape_through_its_outputs(
    running: tuple[TestClient, Settings, EngineCLI], user: Account, tmp_path: Path
) -> None:
    client, settings, _ = running
    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "secret.txt").write_text("CANARY-SECRET-CONTENT")
    write_container_app(
        settings.effective_apps_dir,
        "x-escape",
        ["sh", "-c", ESCAPE, "x-escape", "{params.canary}"],
        parameters={"type": "object", "properties": {"canary": {"type": "string"}}, "required": ["canary"]},
    )
    job_id = submit(client, user, "x-escape", params={"canary": str(canary)})
    log = follow_log(client, job_id, user.headers)
    job = client.get(f"/api/v1/jobs/{job_id}", headers=user.headers).json()
    assert job["state"] == "succeeded" and "attacked" in log, (job, log)
    listed = client.get(f"/api/v1/jobs/{job_id}/outputs", headers=user.headers).json()
    outputs = {
        o["path"]: client.get(f"/api/v1/jobs/{job_id}/outputs/{o['path']}", headers=user.headers).content
        for o in listed
    }
    assert outputs == {"ok.txt": b"fine\n"}, (outputs, log)
    for note in (
        "'stolen.txt': a symbolic link",
        "'dir': a symbolic link",
        "'linked.txt': a hard link",
        "'pipe': a fifo",
    ):
        assert f"output not kept: {note}" in log, log
    assert sorted(p.name for p in canary.iterdir()) == ["secret.txt"]
    assert (canary / "secret.txt").read_text() == "CANARY-SECRET-CONTENT"


def test_a_server_removes_containers_of_attempts_that_are_over(
    settings: Settings, engine: EngineCLI, request: pytest.FixtureRequest
) -> None:
    """A container whose supervisor died unseen (a reboot, kill -9 of both) is removed when a server starts
    leading; one of another labcloud's label but not named by labcloud, and any other, are left alone."""
    stale = f"labcloud-{uuid.uuid4()}-1"
    other = f"not-labcloud-{uuid.uuid4().hex[:8]}"
    for name in (stale, other):
        engine.run(
            "run",
            "-d",
            "--name",
            name,
            "--label=org.labcloud.job=x",
            *engine.run_args,
            "--network=none",
            IMAGE,
            "sleep",
            "60",
        )
    try:
        use_engine(settings, engine)
        request.getfixturevalue("client")  # the server starts, leads, recovers
        eventually(
            lambda: stale not in engine.run("ps", "--all", "--format", "{{.Names}}").stdout.split(),
            30,
            "the stale container to go",
        )
        assert other in engine.run("ps", "--all", "--format", "{{.Names}}").stdout.split()
    finally:
        engine.run("rm", "--force", stale, other, check=False)


def move_tag(cli: EngineCLI, tag: str) -> None:
    """Make ``tag`` name another image: IMAGE with /version in it."""
    name = f"build-{uuid.uuid4().hex[:8]}"
    write = ["sh", "-c", "echo second > /version"]
    cli.run("run", "--name", name, *cli.run_args, "--network=none", IMAGE, *write)
    cli.run("commit", name, tag)
    cli.run("rm", name)


def test_a_rerun_runs_the_image_its_job_ran_even_when_the_tag_moved(
    running: tuple[TestClient, Settings, EngineCLI], user: Account
) -> None:
    client, settings, cli = running
    tag = f"labcloud/moving:{uuid.uuid4().hex[:8]}"
    cli.run("tag", IMAGE, tag)
    try:
        write_container_app(
            settings.effective_apps_dir,
            "moving",
            ["sh", "-c", "cat /version 2>/dev/null || echo first"],
            image=tag,
        )
        first = wait_for_end(client, submit(client, user, "moving"), user.headers)
        assert first["state"] == "succeeded" and first["image"].startswith("sha256:"), first
        move_tag(cli, tag)
        rerun = client.post(f"/api/v1/jobs/{first['id']}/rerun", headers=user.headers).json()
        rerun = wait_for_end(client, rerun["id"], user.headers)
        fresh = wait_for_end(client, submit(client, user, "moving"), user.headers)
        assert rerun["image"] == first["image"] != fresh["image"], (first, rerun, fresh)
        # Asked otherwise, a rerun runs what the tag names now: through the API, and the job page's button.
        body = {"image": "current"}
        current = client.post(f"/api/v1/jobs/{first['id']}/rerun", json=body, headers=user.headers)
        assert current.status_code == 201, current.text
        current = wait_for_end(client, current.json()["id"], user.headers)
        browser = browser_login(client.app, user.email, user.password)
        page = browser.get(f"/jobs/{first['id']}").text
        assert 'id="rerun-current-image"' in page, page
        r = browser.post(
            f"/jobs/{first['id']}/rerun",
            data={"csrf_token": csrf_of(page), "image": "current"},
            follow_redirects=False,
        )
        assert r.status_code == 303, r.text
        from_page = wait_for_end(client, r.headers["location"].rsplit("/", 1)[-1], user.headers)
        assert current["image"] == from_page["image"] == fresh["image"], (current, from_page, fresh)
        assert current["rerun_of"] == from_page["rerun_of"] == first["id"]
        logs = {
            j["id"]: client.get(f"/api/v1/jobs/{j['id']}/logs", headers=user.headers).text
            for j in (rerun, fresh, current, from_page)
        }
        assert "\nfirst" in logs[rerun["id"]] and "\nsecond" in logs[fresh["id"]], logs
        assert "\nsecond" in logs[current["id"]] and "\nsecond" in logs[from_page["id"]], logs
        bad = client.post(f"/api/v1/jobs/{first['id']}/rerun", json={"image": "latest"}, headers=user.headers)
        assert bad.status_code == 422, bad.text
    finally:
        cli.run("rmi", "--force", tag, check=False)


def test_the_command_line_reruns_with_the_current_image_when_asked(
    settings: Settings, docker_cli: EngineCLI, request: pytest.FixtureRequest
) -> None:
    use_engine(settings, docker_cli)
    tag = f"labcloud/moving:{uuid.uuid4().hex[:8]}"
    docker_cli.run("tag", IMAGE, tag)
    try:
        command = ["sh", "-c", "cat /version 2>/dev/null || echo first"]
        write_container_app(settings.effective_apps_dir, "moving", command, image=tag)
        server: Server = request.getfixturevalue("server")
        server.login()
        first = server.json("submit", "moving", "--wait")
        assert first["state"] == "succeeded", first
        move_tag(docker_cli, tag)
        pinned = server.json("rerun", first["id"], "--wait")
        current = server.json("rerun", first["id"], "--current-image", "--wait")
        assert pinned["image"] == first["image"] != current["image"], (first, pinned, current)
        assert server.ok("logs", current["id"]).splitlines()[-1] == "second"
        assert server.ok("logs", pinned["id"]).splitlines()[-1] == "first"
    finally:
        docker_cli.run("rmi", "--force", tag, check=False)


def _run(**changes: Any) -> Any:
    from labcloud.execution.container_run import ContainerRun

    base: dict[str, Any] = {
        "job_id": "j",
        "attempt": 1,
        "image": IMAGE,
        "command": ["--privileged", "-v", "/:/host"],
        "user": "1000:1000",
        "workdir": "",
        "env_file": Path("/srv/a/container.env"),
        "inputs": None,
        "output": Path("/srv/a/work/output"),
        "cpus": 2.0,
        "memory_mb": 256,
    }
    return ContainerRun(**(base | changes))


@pytest.mark.parametrize("kind", ["docker", "podman"])
def test_the_command_line_holds_every_limit_and_nothing_of_the_job_before_the_image(kind: str) -> None:
    from labcloud.execution.containers import Engine

    engine = Engine(kind, (kind,), {}, ("--ulimit=nofile=1024:1024",))  # type: ignore[arg-type]
    argv = engine.run_argv(_run())
    at = argv.index(IMAGE)
    options, after = argv[:at], argv[at + 1 :]
    assert after == ["--privileged", "-v", "/:/host"]  # the job's words come after the image: its arguments
    for option in (
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--user=1000:1000",
        "--network=none",
        "--memory=256m",
        "--memory-swap=256m",
        "--cpus=2",
        "--pull=never",
        "--ulimit=nofile=1024:1024",
        "--env-file=/srv/a/container.env",
        "--mount=type=bind,source=/srv/a/work/output,target=/labcloud/output",
    ):
        assert option in options, (option, options)
    assert not [o for o in options if "gpu" in o or "privileged" in o or "docker.sock" in o], options
    with_gpus = engine.run_argv(_run(gpus=1, network=True))
    assert ("--gpus=1" if kind == "docker" else "--device=nvidia.com/gpu=all") in with_gpus
    assert "--network=none" not in with_gpus
    with pytest.raises(ValueError, match="cannot be mounted"):
        engine.run_argv(_run(output=Path("/srv/a,b/work/output")))


def test_auto_takes_docker_when_its_daemon_answers_else_podman(
    docker_cli: EngineCLI, podman_cli: EngineCLI, tmp_path: Path
) -> None:
    from labcloud.execution.engine_probe import find_engine

    podman_options = podman_cli.argv[1:]
    docker = find_engine("auto", docker_cli.argv[docker_cli.argv.index("-H") + 1], podman_options)
    assert docker.kind == "docker"
    no_daemon = f"unix://{tmp_path / 'docker.sock'}"  # nothing listens there
    podman = find_engine("auto", no_daemon, podman_options)
    assert podman.kind == "podman" and podman.argv[1:] == tuple(podman_options)
    assert podman.labelled() == []  # it answers: no container of labcloud's in this storage
