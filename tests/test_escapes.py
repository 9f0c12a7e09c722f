"""Hostile jobs, wherever they run: on the local executor, a pull worker and a Celery runner (the Slurm
runner is the same code as the Celery one). Whatever a job leaves in its folder, labcloud never follows a
link out of it, never moves or reads a host file through it, skips what is not a file, says so, and a
retried job starts from an empty folder.

Every target is a canary file in a scratch folder of the test, never a real system folder.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any, Protocol

import pytest
from fastapi.testclient import TestClient

from conftest import Account, backend, kill_processes_under
from engine_helpers import CeleryCluster, celery_cluster
from jobs_helpers import wait_for_end, write_app
from labcloud.execution.process import Handle
from labcloud.execution.sandbox import resolve_job_user
from labcloud.settings import Settings
from live_server import eventually
from slurm import SlurmCluster
from worker_helpers import Cluster, pull_server

CANARY = "CANARY-SECRET-CONTENT"
ATTACKS = ("output-link", "file-links", "specials")

ESCAPE = textwrap.dedent(
    """
    import os, shutil, socket, sys
    attack, canary = sys.argv[1], sys.argv[2]
    out = os.environ["LABCLOUD_OUTPUT"]
    print("uid", os.getuid(), flush=True)
    if attack == "output-link":  # the whole output folder points at a host folder
        shutil.rmtree(out)
        os.symlink(canary, out)
    elif attack == "file-links":
        with open(os.path.join(out, "ok.txt"), "w") as f:
            f.write("fine")
        os.symlink(os.path.join(canary, "secret.txt"), os.path.join(out, "stolen.txt"))
        os.symlink(canary, os.path.join(out, "dir"))
        mine = os.path.join(os.environ["HOME"], "mine.txt")
        with open(mine, "w") as f:
            f.write("mine")
        os.link(mine, os.path.join(out, "linked.txt"))
        try:  # a host file owned by another user, that any user may read and write
            os.link(os.path.join(canary, "shared.txt"), os.path.join(out, "host-linked.txt"))
            print("host link made", flush=True)
        except OSError as exc:
            print("host link refused", exc.strerror, flush=True)
    elif attack == "specials":
        with open(os.path.join(out, "ok.txt"), "w") as f:
            f.write("fine")
        os.mkfifo(os.path.join(out, "pipe"))
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        os.chdir(out)  # (a socket's path must be short)
        s.bind("sock")
        for name in ("bad\\nname.txt", "back\\\\slash.txt"):
            with open(os.path.join(out, name), "w") as f:
                f.write(name)
    print("attacked", attack, flush=True)
    """
)

# The first attempt swaps its staged input for a link to a host file and waits to be lost; a second attempt
# staged into the same folder would write the input through that link.
PLANT = textwrap.dedent(
    """
    import os, sys, time
    data = os.environ["LABCLOUD_INPUT_DATA"]
    if os.environ["LABCLOUD_JOB_ATTEMPT"] == "1":
        os.remove(data)
        os.symlink(sys.argv[1], data)
        os.symlink(sys.argv[1], os.path.join(os.environ["LABCLOUD_OUTPUT"], "planted"))
        print("planted", flush=True)
        time.sleep(120)
    with open(data) as src, open(os.path.join(os.environ["LABCLOUD_OUTPUT"], "copy.txt"), "w") as dst:
        dst.write(src.read())
    print("attempt", os.environ["LABCLOUD_JOB_ATTEMPT"], "copied", flush=True)
    """
)

# A job that looks around: reads files it is given (the data dir's database and secret key, another job's
# file), lists folders, connects to Unix sockets (a path, or "@name" in the abstract namespace) and reads the
# command lines of every process it can see. It reports what it learned as one JSON line. A "victim" writes
# its secret into its own folder and waits there to be snooped on.
SNOOP = textwrap.dedent(
    """
    import errno, json, os, socket, sys, time
    mode, targets = sys.argv[1], json.loads(sys.argv[2])
    if mode == "victim":
        with open(os.path.join(os.environ["HOME"], "victim.txt"), "w") as f:
            f.write(targets["secret"])
        print("victim ready", flush=True)
        time.sleep(120)
        sys.exit(0)
    def err(exc):
        if isinstance(exc, OSError) and exc.errno is not None:
            return errno.errorcode.get(exc.errno, str(exc.errno))
        return type(exc).__name__
    seen = dict(files=dict(), folders=dict(), sockets=dict(), processes=[])
    for path in targets["files"]:
        try:
            with open(path, "rb") as f:
                seen["files"][path] = "read " + f.read(200).decode(errors="replace")
        except Exception as exc:
            seen["files"][path] = err(exc)
    for path in targets["folders"]:
        try:
            seen["folders"][path] = sorted(os.listdir(path))
        except Exception as exc:
            seen["folders"][path] = err(exc)
    for address in targets["sockets"]:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(5)
        try:
            s.connect("\\0" + address[1:] if address.startswith("@") else address)
            seen["sockets"][address] = "connected " + s.recv(200).decode(errors="replace")
        except Exception as exc:
            seen["sockets"][address] = err(exc)
        finally:
            s.close()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open("/proc/%s/cmdline" % name, "rb") as f:
                    seen["processes"].append(f.read().replace(b"\\0", b" ").decode(errors="replace"))
            except OSError:
                pass
    print("SNOOP " + json.dumps(seen), flush=True)
    """
)


def hostile_apps(apps_dir: Path, prefix: str = "x-") -> None:
    string = {"type": "string"}
    write_app(
        apps_dir,
        f"{prefix}escape",
        ["python", "-c", ESCAPE, "{params.attack}", "{params.canary}"],
        parameters={
            "type": "object",
            "properties": {"attack": string, "canary": string},
            "required": ["attack", "canary"],
        },
        resources={"cpus": 0.1, "memory_mb": 128, "timeout_s": 60},
    )
    write_app(
        apps_dir,
        f"{prefix}plant",
        ["python", "-c", PLANT, "{params.canary}"],
        parameters={"type": "object", "properties": {"canary": string}, "required": ["canary"]},
        inputs={"data": {"type": "file"}},
        resources={"cpus": 0.1, "memory_mb": 128, "timeout_s": 180},
    )
    write_app(
        apps_dir,
        f"{prefix}snoop",
        ["python", "-c", SNOOP, "{params.mode}", "{params.targets}"],
        parameters={
            "type": "object",
            "properties": {"mode": string, "targets": string},
            "required": ["mode", "targets"],
        },
        resources={"cpus": 0.1, "memory_mb": 128, "timeout_s": 180},
    )


def make_canary(folder: Path) -> Path:
    """A scratch folder with a secret file, as a host folder the job must never reach through labcloud."""
    folder.mkdir(parents=True)
    (folder / "secret.txt").write_text(CANARY)
    (folder / "other.txt").write_text("another host file")
    # Open to every user: the kernel lets a user hard-link only files it owns or may read and write.
    (folder / "shared.txt").write_text(CANARY)
    (folder / "shared.txt").chmod(0o666)
    return folder


def assert_canary_untouched(folder: Path) -> None:
    assert sorted(p.name for p in folder.iterdir()) == ["other.txt", "secret.txt", "shared.txt"]
    assert (folder / "secret.txt").read_text() == CANARY
    assert (folder / "other.txt").read_text() == "another host file"
    assert (folder / "shared.txt").read_text() == CANARY
    assert (folder / "shared.txt").stat().st_nlink == 1  # the job's link went with its folder


def assert_escape_contained(attack: str, job: dict[str, Any], outputs: dict[str, bytes], log: str) -> None:
    """What each attack must come to: the job ends, nothing of the host is kept, and the log says what was
    left behind."""
    assert job["state"] == "succeeded", (job, log)
    assert f"attacked {attack}" in log, log
    assert "uid 0\n" not in log, log  # never root, also on a worker run as root
    assert all(CANARY.encode() not in data for data in outputs.values()), outputs
    if attack == "output-link":
        assert outputs == {}
        assert "not a folder" in job["message"], job
    elif attack == "file-links":
        assert outputs == {"ok.txt": b"fine"}
        assert "output not kept: 'stolen.txt': a symbolic link" in log, log
        assert "output not kept: 'dir': a symbolic link" in log, log
        assert "output not kept: 'linked.txt': a hard link" in log, log
        if (
            "host link made" in log.splitlines()
        ):  # (only where the job sees the host file on its own folder's mount)
            assert "output not kept: 'host-linked.txt': a hard link" in log, log
            assert "4 output entries not kept" in job["message"], job
        else:
            assert any(line.startswith("host link refused ") for line in log.splitlines()), log
            assert "3 output entries not kept" in job["message"], job
    elif attack == "specials":
        assert outputs == {"ok.txt": b"fine"}
        assert "output not kept: 'pipe': a fifo" in log, log
        assert "output not kept: 'sock': a socket" in log, log
        assert log.count("a name that is not valid") + log.count("output not kept: 'back") >= 1, log
        assert "4 output entries not kept" in job["message"], job


# --- snooping: what a job may learn of the host, the data dir and other jobs ---------------------------


class CanarySocket:
    """A Unix socket listening on the host (at a path in a scratch folder, open to every user, and in the
    abstract namespace), answering whoever connects with the canary: the stand-in for a database's or a
    container engine's socket."""

    def __init__(self, folder: Path) -> None:
        self.path = folder / "canary.sock"
        self.abstract = f"@labcloud-canary-{secrets.token_hex(6)}"
        self.accepted = 0
        self.listeners = []
        for address in (str(self.path), "\0" + self.abstract[1:]):
            listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            listener.bind(address)
            listener.listen(8)
            self.listeners.append(listener)
            threading.Thread(target=self._serve, args=(listener,), daemon=True).start()
        self.path.chmod(0o777)

    def _serve(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self.accepted += 1
            with conn:
                conn.sendall(CANARY.encode())

    def close(self) -> None:
        for listener in self.listeners:
            listener.close()


@pytest.fixture
def host_canaries(tmp_path: Path) -> Iterator[tuple[CanarySocket, str]]:
    """A canary socket and a host process whose command line holds a canary marker."""
    marker = f"CANARY-PROCESS-{secrets.token_hex(6)}"
    sock = CanarySocket(tmp_path)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", marker])
    try:
        yield sock, marker
    finally:
        proc.kill()
        proc.wait()
        sock.close()


class Jobs(Protocol):
    def submit(self, app: str, params: dict[str, Any]) -> str: ...
    def log(self, job_id: str) -> str: ...
    def wait_end(self, job_id: str) -> dict[str, Any]: ...
    def cancel(self, job_id: str) -> None: ...


def data_dir_canaries(data_dir: Path) -> list[Path]:
    """Files of the data dir a job must never read: the real database and secret key where this data dir
    has them, and canaries standing in for them where it has not (mode 0600, as labcloud's own)."""
    found = [data_dir / name for name in ("labcloud.sqlite3", "secret_key") if (data_dir / name).exists()]
    for name in ("canary.sqlite3", "canary_secret_key"):
        (data_dir / name).write_text(CANARY)
        (data_dir / name).chmod(0o600)
        found.append(data_dir / name)
    return found


def snoop_and_assert_nothing_learned(
    jobs: Jobs, root: Path, data_dir: Path, canaries: tuple[CanarySocket, str], app: str = "x-snoop"
) -> None:
    """Start a victim job, then a snooping one on the same executor (``root``: a folder holding the
    executor's job folders, to find the victim's), and check the snoop learned nothing."""
    sock, marker = canaries
    victim_secret = f"VICTIM-SECRET-{secrets.token_hex(6)}"
    victim = jobs.submit(app, {"mode": "victim", "targets": json.dumps({"secret": victim_secret})})
    eventually(lambda: "victim ready" in jobs.log(victim).splitlines(), 90, "the victim job to be ready")
    victim_file = next(p for p in root.rglob("victim.txt") if victim_secret in p.read_text())
    targets = {
        "files": [str(p) for p in (*data_dir_canaries(data_dir), victim_file)],
        "folders": [str(data_dir), str(victim_file.parent), str(victim_file.parents[2])],
        "sockets": [str(sock.path), sock.abstract],
    }
    snoop = jobs.submit(app, {"mode": "snoop", "targets": json.dumps(targets)})
    try:
        done = jobs.wait_end(snoop)
        log = jobs.log(snoop)
    finally:
        jobs.cancel(victim)
    assert done["state"] == "succeeded", (done, log)
    lines = [line for line in log.splitlines() if line.startswith("SNOOP ")]
    assert len(lines) == 1, log
    seen = json.loads(lines[0][len("SNOOP ") :])
    assert set(seen["files"]) == set(targets["files"]), seen
    assert not [p for p, what in seen["files"].items() if what.startswith("read")], seen["files"]
    # A folder is gone for the job, or shows no more than the way to the job's own folder.
    assert isinstance(seen["folders"][str(victim_file.parent)], str), seen["folders"]
    secret_names = {"victim.txt", *(Path(p).name for p in targets["files"])}
    for folder, what in seen["folders"].items():
        assert isinstance(what, str) or not [n for n in what if victim in n or n in secret_names], (
            folder,
            what,
        )
    assert set(seen["sockets"].values()) <= {"ENOENT", "ECONNREFUSED", "EACCES"}, seen["sockets"]
    assert sock.accepted == 0
    everything = "\n".join(seen["processes"])
    assert marker not in everything and victim_secret not in everything, seen["processes"]
    # It sees its own sandbox (bwrap, running its command) and nothing else: no server, worker or job.
    assert all('print("SNOOP "' in command for command in seen["processes"]), seen["processes"]
    assert CANARY not in log and victim_secret not in log, log


class LocalJobs:
    def __init__(self, client: TestClient, user: Account) -> None:
        self.client, self.user = client, user

    def submit(self, app: str, params: dict[str, Any]) -> str:
        r = self.client.post("/api/v1/jobs", json={"app": app, "params": params}, headers=self.user.headers)
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def log(self, job_id: str) -> str:
        return self.client.get(f"/api/v1/jobs/{job_id}/logs", headers=self.user.headers).text

    def wait_end(self, job_id: str) -> dict[str, Any]:
        return wait_for_end(self.client, job_id, self.user.headers)

    def cancel(self, job_id: str) -> None:
        self.client.post(f"/api/v1/jobs/{job_id}/cancel", headers=self.user.headers)


class RemoteJobs:
    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster

    def submit(self, app: str, params: dict[str, Any]) -> str:
        return str(self.cluster.submit(app, params)["id"])

    def log(self, job_id: str) -> str:
        return self.cluster.log(job_id)

    def wait_end(self, job_id: str) -> dict[str, Any]:
        return self.cluster.wait_end(job_id, timeout=90)

    def cancel(self, job_id: str) -> None:
        self.cluster.http.post(f"/api/v1/jobs/{job_id}/cancel")


# --- on the local executor ----------------------------------------------------------------------------


def _refresh(client: TestClient) -> None:
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]


def _outputs(client: TestClient, job_id: str, headers: dict[str, str]) -> dict[str, bytes]:
    listed = client.get(f"/api/v1/jobs/{job_id}/outputs", headers=headers).json()
    return {
        o["path"]: client.get(f"/api/v1/jobs/{job_id}/outputs/{o['path']}", headers=headers).content
        for o in listed
    }


@pytest.mark.parametrize("attack", ATTACKS)
def test_local_jobs_cannot_escape_through_their_outputs(
    client: TestClient, settings: Settings, user: Account, tmp_path: Path, attack: str
) -> None:
    hostile_apps(settings.effective_apps_dir)
    _refresh(client)
    canary = make_canary(tmp_path / "canary")
    r = client.post(
        "/api/v1/jobs",
        json={"app": "x-escape", "params": {"attack": attack, "canary": str(canary)}},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    job = wait_for_end(client, r.json()["id"], user.headers)
    log = client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
    outputs = _outputs(client, job["id"], user.headers)
    assert_escape_contained(attack, job, outputs, log)
    assert_canary_untouched(canary)
    # nothing of the canary reached the user's space either
    listed = client.get("/api/v1/files", params={"prefix": f"jobs/{job['id']}"}, headers=user.headers)
    assert listed.status_code in (200, 404)
    assert not (settings.home / "jobs" / job["id"] / "attempt-1" / "work").exists()  # cleaned up after


def test_a_retried_local_job_stages_into_a_fresh_folder(
    client: TestClient, settings: Settings, user: Account, tmp_path: Path
) -> None:
    hostile_apps(settings.effective_apps_dir)
    _refresh(client)
    canary = make_canary(tmp_path / "canary")
    r = client.put("/api/v1/files/in/data.txt", content=b"the input", headers=user.headers)
    assert r.status_code == 201, r.text
    r = client.post(
        "/api/v1/jobs",
        json={
            "app": "x-plant",
            "params": {"canary": str(canary / "secret.txt")},
            "inputs": {"data": "in/data.txt"},
        },
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    job_id = r.json()["id"]
    first = settings.home / "jobs" / job_id / "attempt-1"

    def planted() -> bool:
        log = client.get(f"/api/v1/jobs/{job_id}/logs", headers=user.headers).text
        return "planted" in log.splitlines()

    eventually(planted, 60, "the first attempt to plant its links")
    handle = Handle.from_json((first / "handle.json").read_text())
    os.kill(handle.pid, signal.SIGKILL)  # its supervisor dies: the attempt is lost and the job retried
    job = wait_for_end(client, job_id, user.headers)
    log = client.get(f"/api/v1/jobs/{job_id}/logs", headers=user.headers).text
    assert job["state"] == "succeeded" and job["attempts"] == 2, (job, log)
    assert "attempt 2 copied" in log, log
    assert_canary_untouched(canary)
    assert _outputs(client, job_id, user.headers) == {"copy.txt": b"the input"}
    assert not first.exists()  # the lost attempt's folder (and its links) went before the next one began


def test_local_jobs_learn_nothing_of_the_host_or_other_jobs(
    client: TestClient, settings: Settings, user: Account, host_canaries: tuple[CanarySocket, str]
) -> None:
    hostile_apps(settings.effective_apps_dir)
    _refresh(client)
    snoop_and_assert_nothing_learned(LocalJobs(client, user), settings.home, settings.home, host_canaries)


# --- with the sandbox off ------------------------------------------------------------------------------

JOB_USER = resolve_job_user("nobody")  # None unless the tests run as root (as they do in CI)
WHOAMI = (
    'echo "uid $(id -u) gid $(id -g) groups $(id -G)"; id -u > "$LABCLOUD_OUTPUT/uid.txt"; '
    'cat "$1" || echo "canary unreadable"'
)


def whoami_app(apps_dir: Path) -> None:
    write_app(
        apps_dir,
        "x-whoami",
        ["sh", "-c", WHOAMI, "sh", "{params.canary}"],
        parameters={"type": "object", "properties": {"canary": {"type": "string"}}, "required": ["canary"]},
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )


def _whoami(
    client: TestClient, settings: Settings, user: Account, canary: Path
) -> tuple[dict[str, Any], str]:
    whoami_app(settings.effective_apps_dir)
    _refresh(client)
    r = client.post(
        "/api/v1/jobs", json={"app": "x-whoami", "params": {"canary": str(canary)}}, headers=user.headers
    )
    assert r.status_code == 201, r.text
    job = wait_for_end(client, r.json()["id"], user.headers)
    return job, client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text


@pytest.fixture
def sandbox_off(settings: Settings, open_scratch: Path) -> Settings:
    """The local executor without a sandbox, its data dir where the job user may pass through."""
    settings.sandbox = "off"
    settings.home = open_scratch / "home"
    return settings


def test_local_jobs_with_the_sandbox_off_still_run_as_the_job_user(
    sandbox_off: Settings, client: TestClient, user: Account, open_scratch: Path
) -> None:
    canary = open_scratch / "root-only.txt"
    canary.write_text(CANARY)
    canary.chmod(0o600)
    job, log = _whoami(client, sandbox_off, user, canary)
    assert job["state"] == "succeeded", (job, log)
    uid = client.get(f"/api/v1/jobs/{job['id']}/outputs/uid.txt", headers=user.headers).text.strip()
    assert uid != "0" and "uid 0 " not in log, log
    if JOB_USER is not None:
        assert uid == str(JOB_USER.uid)
        assert f"uid {JOB_USER.uid} gid {JOB_USER.gid} groups {JOB_USER.gid}\n" in log, log
        assert "canary unreadable" in log and CANARY not in log, log
        # The job user passes through the data dir to its folder; nobody else gets anything of it.
        home = os.stat(sandbox_off.home)
        assert home.st_mode & 0o777 == 0o710 and home.st_gid == JOB_USER.gid, oct(home.st_mode)
    assert canary.read_text() == CANARY


@pytest.fixture
def sandbox_off_in_tmp_path(settings: Settings) -> Settings:
    """The local executor without a sandbox, its data dir in tmp_path (only its own user may enter that)."""
    settings.sandbox = "off"
    return settings


def test_local_jobs_with_the_sandbox_off_start_only_where_the_job_user_reaches(
    sandbox_off_in_tmp_path: Settings, client: TestClient, user: Account, tmp_path: Path
) -> None:
    """Run by root with its data dir below a folder only root may enter (pytest's): a job would run as the
    job user all the same and could not reach its folder. It does not start, and says why."""
    settings = sandbox_off_in_tmp_path
    canary = make_canary(tmp_path / "canary") / "secret.txt"
    job, log = _whoami(client, settings, user, canary)
    if JOB_USER is None:  # (not root: jobs run as this user, who reaches everything of its own)
        assert job["state"] == "succeeded", (job, log)
        return
    assert (job["state"], job["reason"]) == ("failed", "system_error"), (job, log)
    assert "sandbox = off" in job["message"] and "may not enter" in job["message"], job
    assert "uid " not in log and CANARY not in log, log


def test_with_the_sandbox_off_a_hard_link_to_a_host_file_is_not_kept(
    sandbox_off: Settings, client: TestClient, user: Account, open_scratch: Path
) -> None:
    """Without a sandbox a job may hard-link a host file it can reach (here one of root's, open to every
    user) into its output: collection refuses it as a hard link, and the host file stays as it was."""
    write_app(
        sandbox_off.effective_apps_dir,
        "x-hardlink",
        [
            "sh",
            "-c",
            'echo mine > "$LABCLOUD_OUTPUT/ok.txt"; ln "$1" "$LABCLOUD_OUTPUT/host.txt" && echo linked',
            "sh",
            "{params.canary}",
        ],
        parameters={"type": "object", "properties": {"canary": {"type": "string"}}, "required": ["canary"]},
        resources={"cpus": 0.1, "memory_mb": 64, "timeout_s": 60},
    )
    _refresh(client)
    canary = make_canary(open_scratch / "canary")
    r = client.post(
        "/api/v1/jobs",
        json={"app": "x-hardlink", "params": {"canary": str(canary / "shared.txt")}},
        headers=user.headers,
    )
    assert r.status_code == 201, r.text
    job = wait_for_end(client, r.json()["id"], user.headers)
    log = client.get(f"/api/v1/jobs/{job['id']}/logs", headers=user.headers).text
    assert job["state"] == "succeeded", (job, log)
    assert "linked" in log.splitlines(), log  # the case arises: the link was made
    assert "output not kept: 'host.txt': a hard link" in log, log
    assert _outputs(client, job["id"], user.headers) == {"ok.txt": b"mine\n"}
    assert_canary_untouched(canary)


# --- on a pull worker and a Celery runner ------------------------------------------------------------


@pytest.fixture(scope="module")
def worker_cluster(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Cluster]:
    home = tmp_path_factory.mktemp("escape-workers")
    url = database_url if backend() == "postgresql" else None
    try:
        with pull_server(home, url, hostile_apps, lease_seconds=3) as cluster:
            cluster.start_worker("hostile-host", "--sandbox", "required")
            yield cluster
    finally:
        kill_processes_under(home)
        if url:
            from conftest import _empty_tables

            _empty_tables(url)


@pytest.fixture(scope="module")
def celery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CeleryCluster]:
    home = tmp_path_factory.mktemp("escape-celery")
    with celery_cluster(home, "redis://127.0.0.1:6379/0", apps=hostile_apps) as cluster:
        cluster.start_celery_worker("hostile-celery", sandbox="required")
        yield cluster


def _cluster_outputs(cluster: Cluster, job_id: str) -> dict[str, bytes]:
    return {
        o["path"]: cluster.http.get(f"/api/v1/jobs/{job_id}/outputs/{o['path']}").content
        for o in cluster.api("GET", f"/jobs/{job_id}/outputs")
    }


def _remote_escape(cluster: Cluster, canary: Path, attack: str, app: str = "x-escape") -> None:
    job = cluster.submit(app, {"attack": attack, "canary": str(canary)})
    done = cluster.wait_end(job["id"], timeout=90)
    log = cluster.log(job["id"])
    assert_escape_contained(attack, done, _cluster_outputs(cluster, job["id"]), log)
    assert_canary_untouched(canary)


@pytest.mark.parametrize("attack", ATTACKS)
def test_worker_jobs_cannot_escape_through_their_outputs(
    worker_cluster: Cluster, tmp_path: Path, attack: str
) -> None:
    _remote_escape(worker_cluster, make_canary(tmp_path / "canary"), attack)


@pytest.mark.celery
@pytest.mark.db_agnostic
@pytest.mark.parametrize("attack", ATTACKS)
def test_celery_jobs_cannot_escape_through_their_outputs(
    celery: CeleryCluster, tmp_path: Path, attack: str
) -> None:
    _remote_escape(celery, make_canary(tmp_path / "canary"), attack)


def _remote_retry_stages_fresh(cluster: Cluster, tmp_path: Path, runs: Path) -> None:
    """The first attempt plants links and its supervisor is killed (``runs``: a folder holding the
    attempt's); the second one stages into a fresh folder and never writes through them."""
    canary = make_canary(tmp_path / "canary")
    cluster.api("PUT", "/files/in/plant.txt", expect=201, content=b"the input")
    job = cluster.submit("x-plant", {"canary": str(canary / "secret.txt")}, inputs={"data": "in/plant.txt"})
    eventually(lambda: "planted" in cluster.log(job["id"]).splitlines(), 60, "the links to be planted")
    handles = list(runs.rglob(f"{job['id']}-1/handle.json"))
    assert len(handles) == 1, list(runs.rglob("handle.json"))
    os.kill(Handle.from_json(handles[0].read_text()).pid, signal.SIGKILL)
    done = cluster.wait_end(job["id"], timeout=90)
    assert done["state"] == "succeeded" and done["attempts"] == 2, (done, cluster.log(job["id"]))
    assert "attempt 2 copied" in cluster.log(job["id"]).splitlines()
    assert_canary_untouched(canary)
    assert _cluster_outputs(cluster, job["id"]) == {"copy.txt": b"the input"}


def test_a_worker_s_retried_job_stages_into_a_fresh_folder(worker_cluster: Cluster, tmp_path: Path) -> None:
    _remote_retry_stages_fresh(worker_cluster, tmp_path, worker_cluster.workers[0].work_dir / "jobs")


@pytest.mark.celery
@pytest.mark.db_agnostic
def test_a_celery_runner_s_retried_job_stages_into_a_fresh_folder(
    celery: CeleryCluster, tmp_path: Path
) -> None:
    _remote_retry_stages_fresh(celery, tmp_path, celery.home / "celery")


def test_worker_jobs_learn_nothing_of_the_host_or_other_jobs(
    worker_cluster: Cluster, host_canaries: tuple[CanarySocket, str]
) -> None:
    cluster = worker_cluster
    snoop_and_assert_nothing_learned(
        RemoteJobs(cluster), cluster.workers[0].work_dir, cluster.home, host_canaries
    )


@pytest.mark.celery
@pytest.mark.db_agnostic
def test_celery_jobs_learn_nothing_of_the_host_or_other_jobs(
    celery: CeleryCluster, host_canaries: tuple[CanarySocket, str]
) -> None:
    snoop_and_assert_nothing_learned(RemoteJobs(celery), celery.home / "celery", celery.home, host_canaries)


# --- on a Slurm runner ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slurm_escapes(tmp_path_factory: pytest.TempPathFactory, slurm_cluster: SlurmCluster) -> Iterator[Cluster]:
    """A server whose route sends the ``e-*`` apps to Slurm, whose runners run them in the sandbox."""
    from test_slurm import slurm_pull_server

    home = tmp_path_factory.mktemp("escape-slurm")
    with slurm_pull_server(
        home, partial(hostile_apps, prefix="e-"), {"SLURM_CONF": str(slurm_cluster.conf)}, sandbox="required"
    ) as cluster:
        yield cluster


@pytest.mark.usefixtures("slurm")  # what it left in Slurm is cancelled with the test
@pytest.mark.slurm
@pytest.mark.db_agnostic
@pytest.mark.parametrize("attack", ATTACKS)
def test_slurm_jobs_cannot_escape_through_their_outputs(
    slurm_escapes: Cluster, tmp_path: Path, attack: str
) -> None:
    _remote_escape(slurm_escapes, make_canary(tmp_path / "canary"), attack, app="e-escape")


@pytest.mark.usefixtures("slurm")  # its Slurm jobs (a victim that sleeps 120 s) end with the test
@pytest.mark.slurm
@pytest.mark.db_agnostic
def test_slurm_jobs_learn_nothing_of_the_host_or_other_jobs(
    slurm_escapes: Cluster, host_canaries: tuple[CanarySocket, str]
) -> None:
    cluster = slurm_escapes
    jobs = RemoteJobs(cluster)
    snoop_and_assert_nothing_learned(jobs, cluster.home / "runs", cluster.home, host_canaries, app="e-snoop")
