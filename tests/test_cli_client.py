"""The client side of ``labcloud`` against a real ``labcloud serve``, each command run as its own process."""

from __future__ import annotations

import json
import os
import queue
import socket
import stat
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import labcloud_demo
from conftest import backend
from labcloud.settings import Settings

LABCLOUD = [sys.executable, "-m", "labcloud.cli"]
ADMIN_EMAIL = "admin@example.org"
ADMIN_PASSWORD = "cli-client-test-password"
SAMPLE_TRACE = Path(labcloud_demo.__file__).parent / "samples" / "trace.csv"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("LABCLOUD_")}


@dataclass
class Server:
    url: str
    config: Path  # the client config file the commands use (LABCLOUD_CLIENT_CONFIG)

    def env(self, **extra: str) -> dict[str, str]:
        return {**_clean_env(), "LABCLOUD_CLIENT_CONFIG": str(self.config), "COLUMNS": "200", **extra}

    def run(
        self, *args: str, stdin: str | None = None, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*LABCLOUD, *args],
            env=env or self.env(),
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def ok(self, *args: str, stdin: str | None = None) -> str:
        """Run a command that must succeed; its stdout."""
        r = self.run(*args, stdin=stdin)
        assert r.returncode == 0, f"labcloud {' '.join(args)} → {r.returncode}\n{r.stdout}\n{r.stderr}"
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def login(self) -> None:
        """Log in as the administrator, the password on standard input."""
        self.ok(
            "login", "--server", self.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin=ADMIN_PASSWORD
        )


@pytest.fixture(scope="module")
def schema_upgraded(database_url: str) -> None:
    """On PostgreSQL the operator migrates first (``serve`` never does); once is enough for the module."""
    if backend() == "postgresql":
        env = {**_clean_env(), "LABCLOUD_DATABASE_URL": database_url}
        r = subprocess.run([*LABCLOUD, "db", "upgrade"], env=env, capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr


@pytest.fixture
def server(settings: Settings, database_url: str, schema_upgraded: None, tmp_path: Path) -> Iterator[Server]:
    """``labcloud serve`` on a free port with its own data dir (``settings.home``, so leftover job processes
    are killed and the shared test database is emptied afterwards by the ``settings`` fixture)."""
    env = {
        **_clean_env(),
        "LABCLOUD_HOME": str(settings.home),
        "LABCLOUD_INITIAL_ADMIN_EMAIL": ADMIN_EMAIL,
        "LABCLOUD_INITIAL_ADMIN_PASSWORD": ADMIN_PASSWORD,
        "LABCLOUD_SCHEDULER_INTERVAL_S": "0.5",
        "LABCLOUD_KILL_GRACE_S": "1",
        "LABCLOUD_LOCAL_CPUS": "2",
        "LABCLOUD_LOCAL_MEMORY_MB": "4096",
        "LABCLOUD_LOG_LEVEL": "warning",
    }
    if backend() == "postgresql":
        env["LABCLOUD_DATABASE_URL"] = database_url
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log_path = tmp_path / "server.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [*LABCLOUD, "serve", "--port", str(port)], env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, "labcloud serve exited:\n" + log_path.read_text()
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, (
                "labcloud serve did not become ready:\n" + log_path.read_text()
            )
            time.sleep(0.1)
        yield Server(url, tmp_path / "client" / "client.json")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def cli(server: Server) -> Server:
    """The server, with the client logged in as the administrator."""
    server.login()
    return server


def test_login_stores_a_private_token_and_whoami_uses_it(server: Server, tmp_path: Path) -> None:
    wrong = server.run(
        "login", "--server", server.url, "--email", ADMIN_EMAIL, "--password-stdin", stdin="not-it\n"
    )
    assert wrong.returncode != 0
    assert "The email or password is not correct" in wrong.stderr
    assert not server.config.exists()

    server.login()
    assert stat.S_IMODE(server.config.stat().st_mode) == 0o600
    assert stat.S_IMODE(server.config.parent.stat().st_mode) == 0o700
    stored = json.loads(server.config.read_text())
    assert stored["server"] == server.url
    assert stored["token"].startswith("lc_")
    assert ADMIN_PASSWORD not in server.config.read_text()

    # later commands find the server and token in the file
    assert ADMIN_EMAIL in server.ok("whoami")
    me = server.json("whoami")
    assert me["email"] == ADMIN_EMAIL and me["is_admin"] is True and me["server"] == server.url

    # the environment overrides the file: a script needs no login
    scripted = server.run(
        "whoami",
        "--json",
        env=server.env(
            LABCLOUD_CLIENT_CONFIG=str(tmp_path / "none.json"),
            LABCLOUD_SERVER=server.url,
            LABCLOUD_TOKEN=stored["token"],
        ),
    )
    assert scripted.returncode == 0, scripted.stderr
    assert json.loads(scripted.stdout)["email"] == ADMIN_EMAIL
    bogus = server.run("whoami", env=server.env(LABCLOUD_SERVER=server.url, LABCLOUD_TOKEN="lc_not-a-token"))
    assert bogus.returncode != 0 and "LABCLOUD_TOKEN" in bogus.stderr

    # --token stores a token after checking it with the server
    other = tmp_path / "other" / "client.json"
    env = server.env(LABCLOUD_CLIENT_CONFIG=str(other))
    assert server.run("login", "--server", server.url, "--token", "lc_nope", env=env).returncode != 0
    assert not other.exists()
    assert server.run("login", "--server", server.url, "--token", stored["token"], env=env).returncode == 0
    assert json.loads(other.read_text())["token"] == stored["token"]

    # logging in again replaces (and revokes) the machine's previous token
    server.login()
    assert json.loads(server.config.read_text())["token"] != stored["token"]
    stale = server.run("whoami", env=env)
    assert stale.returncode != 0 and "run labcloud login" in stale.stderr

    server.ok("logout")
    assert json.loads(server.config.read_text())["token"] == ""
    assert server.run("whoami").returncode != 0


def test_apps_submit_wait_logs_jobs_status_download(cli: Server, tmp_path: Path) -> None:
    apps = cli.json("apps")
    assert {"hello", "spikes", "lif"} <= {a["name"] for a in apps["items"]}
    detail = cli.ok("apps", "hello")
    assert "times" in detail and "How many greetings" in detail

    job = cli.json("submit", "hello", "-p", "name=Ada", "-p", "times=2", "--tag", "exp=cli", "--wait")
    assert job["state"] == "succeeded"
    assert job["params"] == {"name": "Ada", "times": 2}  # -p values are JSON when they parse
    assert job["tags"] == {"exp": "cli"}
    job_id = job["id"]

    assert "Hello, Ada! (2/2)" in cli.ok("logs", job_id)
    followed = cli.run("logs", "--follow", job_id)
    assert followed.returncode == 0 and "Hello, Ada! (1/2)" in followed.stdout

    listed = cli.json("jobs")
    assert job_id in [j["id"] for j in listed["items"]]
    filtered = cli.json("jobs", "--state", "succeeded", "--tag", "exp=cli", "--all")
    assert [j["id"] for j in filtered["items"]] == [job_id]
    assert cli.json("jobs", "--state", "failed")["items"] == []
    table = cli.ok("jobs")
    assert job_id in table and "hello:1.0" in table and "succeeded" in table

    status = cli.ok("status", job_id)
    assert "history" in status and "queued" in status and "succeeded" in status and "name=Ada" in status
    full = cli.json("status", job_id)
    assert full["job"]["exit_code"] == 0
    assert full["events"][0]["to_state"] == "queued"
    assert full["events"][-1]["to_state"] == "succeeded"

    dest = tmp_path / "results"
    written = cli.json("download", job_id, str(dest))
    assert [w["path"] for w in written] == ["greeting.txt"]
    assert (dest / "greeting.txt").read_text() == "Hello, Ada! (1/2)\nHello, Ada! (2/2)\n"
    assert sorted(p.name for p in dest.iterdir()) == ["greeting.txt"]  # no temporary files left
    archive = tmp_path / "out.zip"
    cli.ok("download", "--zip", job_id, str(archive))
    with zipfile.ZipFile(archive) as zf:
        assert zf.read("greeting.txt").startswith(b"Hello, Ada!")

    bad = cli.run("submit", "hello", "-p", "times=0")
    assert bad.returncode != 0 and "params.times" in bad.stderr
    unknown = cli.run("submit", "hello", "-p", "colour=red")
    assert unknown.returncode != 0 and "colour" in unknown.stderr
    assert cli.run("submit", "nosuchapp").returncode != 0

    cancel = cli.run("cancel", job_id)
    assert cancel.returncode != 0
    assert "has already ended (succeeded); there is nothing to cancel" in cancel.stderr

    again = cli.json("rerun", job_id, "--wait")
    assert again["id"] != job_id and again["state"] == "succeeded" and again["rerun_of"] == job_id


def test_inputs_uploads_failures_and_a_live_log(cli: Server, tmp_path: Path) -> None:
    job = cli.json("submit", "spikes", "-i", f"trace={SAMPLE_TRACE}", "-p", "threshold=5", "--wait")
    assert job["state"] == "succeeded", job
    assert job["inputs"] == {"trace": "inputs/trace.csv"}
    stored = {f["path"]: f for f in cli.json("files", "inputs")["items"]}
    assert stored["inputs/trace.csv"]["size"] == SAMPLE_TRACE.stat().st_size
    outputs = {w["path"] for w in cli.json("download", job["id"], str(tmp_path / "spikes"))}
    assert {"spikes.csv", "summary.json"} <= outputs

    # a folder keeps its name and layout; a path already in the space is used as it is
    folder = tmp_path / "recordings"
    (folder / "bad").mkdir(parents=True)
    (folder / "bad" / "broken.csv").write_text("this is not a voltage trace\n")
    uploaded = cli.json("upload", str(folder), "--to", "lab")
    assert [u["path"] for u in uploaded] == ["lab/recordings/bad/broken.csv"]
    assert "lab/recordings/bad/broken.csv" in cli.ok("files", "lab/recordings/bad")
    failed = cli.run("submit", "spikes", "-i", "trace=lab/recordings/bad/broken.csv", "--wait")
    assert failed.returncode != 0
    assert "failed (app_error" in failed.stderr

    missing = cli.run("submit", "spikes", "-i", "trace=no/such/file.csv")
    assert missing.returncode != 0 and "inputs.trace" in missing.stderr

    # logs -f streams a running job's log and ends, exit code 1, when the job is cancelled
    job_id = cli.ok("submit", "lif", "-p", "neurons=1000", "-p", "duration_ms=20000", "--quiet").strip()
    follower = subprocess.Popen(
        [*LABCLOUD, "logs", "-f", job_id],
        env=cli.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert follower.stdout is not None and follower.stderr is not None
    lines: queue.Queue[str] = queue.Queue()
    stdout = follower.stdout

    def read() -> None:
        for line in stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        first = lines.get(timeout=60)  # the log arrives while the job runs
        assert "labcloud_demo.lif" in first
        cancelled = cli.json("cancel", job_id)
        assert cancelled["state"] in ("cancelling", "cancelled")
        follower.wait(timeout=60)  # the stream ends with the job
        errors = follower.stderr.read()
    finally:
        follower.kill()
        follower.wait()
    assert follower.returncode == 1, errors
    assert f"job {job_id} cancelled" in errors
    assert cli.json("status", job_id)["job"]["state"] == "cancelled"
