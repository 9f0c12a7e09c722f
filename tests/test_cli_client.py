"""The client side of ``labcloud`` against a real ``labcloud serve``, each command run as its own process."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import queue
import socket
import stat
import subprocess
import threading
import zipfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

import labcloud_demo
from live_server import ADMIN_EMAIL, ADMIN_PASSWORD, LABCLOUD, Server, eventually, login_headers

pytestmark = pytest.mark.db_agnostic  # the client side; the server's database is tested elsewhere

SAMPLE_TRACE = Path(labcloud_demo.__file__).parent / "samples" / "trace.csv"


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


# ---------------------------------------------------------------------------------------------- projects


def _user_env(cli: Server, name: str) -> dict[str, str]:
    """The environment of a new user's commands (the administrator invites them with the token of their
    login; the user's login token goes in LABCLOUD_TOKEN)."""
    email, password = f"{name}@example.org", f"{name}-password-1"
    admin = json.loads(cli.config.read_text())["token"]
    r = httpx.post(
        f"{cli.url}/api/v1/users",
        json={"email": email, "password": password},
        headers={"Authorization": f"Bearer {admin}"},
    )
    assert r.status_code == 201, r.text
    token = login_headers(cli.url, email, password)["Authorization"].removeprefix("Bearer ")
    return cli.env(LABCLOUD_SERVER=cli.url, LABCLOUD_TOKEN=token)


def test_projects_members_join_codes_and_a_projects_jobs(cli: Server) -> None:
    assert cli.ok("projects", "create", "Vision Lab", "--slug", "vision").strip() == "vision"
    member, viewer, outsider = (_user_env(cli, name) for name in ("member", "viewer", "outsider"))
    code = cli.ok("projects", "code", "vision", "--days", "3").strip()
    joined = cli.run("projects", "join", code, env=member)
    assert "you are member in project vision" in joined.stderr, joined.stderr
    cli.ok("projects", "add", "vision", "viewer@example.org", "--role", "viewer")

    # a member runs a job there, a viewer lists the project's jobs, an outsider is told there is none
    submitted = cli.run("submit", "hello", "-p", "times=1", "--project", "vision", "--json", env=member)
    job = json.loads(submitted.stdout)
    assert job["project"] == "vision", submitted.stderr
    listed = cli.run("jobs", "-p", "vision", env=viewer)
    assert job["id"] in listed.stdout and "project vision" in listed.stdout, listed.stderr
    hidden = cli.run("jobs", "--project", "vision", env=outsider)
    assert hidden.returncode == 1 and "error: You have no project 'vision'." in hidden.stderr

    shown = cli.ok("projects", "show", "vision")
    assert "member@example.org" in shown and "viewer@example.org" in shown and "works until" in shown
    overview = cli.ok("projects")  # the list, without a command
    assert "Vision Lab" in overview and "owner" in overview and "personal" in overview

    # members go by email
    changed = cli.run("projects", "role", "vision", "Viewer@example.org", "member")
    assert "viewer@example.org is member in project vision" in changed.stderr, changed.stderr
    removed = cli.run("projects", "remove", "vision", "viewer@example.org")
    assert "removed viewer@example.org from project vision" in removed.stderr, removed.stderr
    left = cli.run("projects", "leave", "vision", env=member)
    assert left.returncode == 0 and "you left project vision" in left.stderr, left.stderr


# ------------------------------------------------------------------------------------ quotas, usage


def test_quota_bars_requests_decisions_and_usage(cli: Server) -> None:
    assert "has no quotas" in cli.run("quota").stderr  # your personal project, by default
    cli.ok("projects", "create", "Budget", "--slug", "budget")
    member = _user_env(cli, "member")
    cli.ok("projects", "add", "budget", "member@example.org")
    admin = {"Authorization": f"Bearer {json.loads(cli.config.read_text())['token']}"}
    quota = {"limit": 5, "period": "daily"}
    r = httpx.put(f"{cli.url}/api/v1/projects/budget/quotas/jobs_per_day", json=quota, headers=admin)
    assert r.status_code == 200, r.text
    headers = {"Authorization": f"Bearer {member['LABCLOUD_TOKEN']}"}
    job = {"app": "hello", "params": {"times": 1}, "project": "budget"}
    ids = [httpx.post(f"{cli.url}/api/v1/jobs", json=job, headers=headers).json()["id"] for _ in range(4)]

    shown = cli.run("quota", "--project", "budget", env=member)
    assert "jobs_per_day" in shown.stdout and "████████████████░░░░ 80%" in shown.stdout, shown.stderr
    assert "warning" in shown.stdout and "daily" in shown.stdout
    [listed] = json.loads(cli.run("quota", "-p", "budget", "--json", env=member).stdout)["items"]
    assert (listed["used"], listed["left"], listed["level"]) == (4, 1, "warning")

    # asking for more: every bad field named; a manager decides, once
    bad = cli.run("quota", "request", "budget", "gpu_hours", "0", "--why", "more", env=member)
    assert bad.returncode == 1 and "error: Some fields of the request are not valid." in bad.stderr
    for line in (
        "resource: project 'budget' has no gpu_hours quota",
        "amount: a number above 0",
        "justification",
    ):
        assert f"  {line}" in bad.stderr, bad.stderr
    why = "a sweep over twelve thresholds"
    asked = cli.run("quota", "request", "budget", "jobs_per_day", "10", "--why", why, env=member)
    request_id = asked.stdout.strip()
    assert asked.returncode == 0 and "its managers decide" in asked.stderr, asked.stderr
    requests = cli.run("quota", "requests", "budget", env=member).stdout
    assert request_id in requests and "member@example.org" in requests and "pending" in requests
    refused = cli.run("quota", "approve", "budget", request_id, env=member)
    assert refused.returncode == 1 and "this needs manager or more" in refused.stderr
    approved = cli.run("quota", "approve", "budget", request_id, "--note", "granted")
    assert "approved: 10 more jobs_per_day in project budget" in approved.stderr, approved.stderr
    twice = cli.run("quota", "reject", "budget", request_id)
    assert twice.returncode == 1 and "error: That request was approved already." in twice.stderr
    assert cli.json("quota", "-p", "budget")["items"][0]["limit"] == 15

    # what the project used: a table per app, CSV per user
    def ended() -> bool:
        jobs = [httpx.get(f"{cli.url}/api/v1/jobs/{i}", headers=headers).json() for i in ids]
        return all(j["state"] in ("succeeded", "failed", "cancelled") for j in jobs)

    eventually(ended, 120, "the jobs to end")
    by_app = cli.run("usage", "budget", "--by", "app", env=member)
    assert by_app.returncode == 0 and "hello" in by_app.stdout and "CPU-hours" in by_app.stdout, by_app.stderr
    csv = cli.run("usage", "budget", "--csv", env=member).stdout.splitlines()
    assert csv[0] == "user,attempts,cpu_hours,gpu_hours,wall_hours,peak_memory_mb"
    assert csv[1].startswith("member@example.org,4,")
    wrong = cli.run("usage", "budget", "--since", "yesterday")
    assert wrong.returncode == 1 and "error: --since: a date (YYYY-MM-DD)" in wrong.stderr
    assert "used nothing" in cli.run("usage", "budget", "--until", "2000-01-01").stderr


# ---------------------------------------------------------------------------------------------- uploads


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _state_entries(server: Server) -> dict[str, Any]:
    """The client's memory of unfinished uploads (beside its config file)."""
    path = server.config.parent / "uploads.json"
    if not path.exists():
        return {}
    entries: dict[str, Any] = json.loads(path.read_text())
    return entries


def test_parallel_upload_of_folders_then_download_files_and_folders(
    storage_backend: str, cli: Server, tmp_path: Path
) -> None:
    """On both stores: with S3 a file download is a redirect to a presigned URL, which the client follows."""
    folder = tmp_path / "data"
    (folder / "sub" / "deeper").mkdir(parents=True)
    (folder / "a.bin").write_bytes(os.urandom(3 * 2**20 + 7))
    (folder / "sub" / "b.txt").write_text("b\n")
    (folder / "sub" / "deeper" / "c.bin").write_bytes(os.urandom(2**20 + 1))
    (folder / "sub" / "empty.txt").write_bytes(b"")
    (folder / "naïve name.txt").write_text("unicode\n")
    single = tmp_path / "single.csv"
    single.write_text("t,v\n0,1\n")
    expected = {
        "proj/data/a.bin": folder / "a.bin",
        "proj/data/sub/b.txt": folder / "sub" / "b.txt",
        "proj/data/sub/deeper/c.bin": folder / "sub" / "deeper" / "c.bin",
        "proj/data/sub/empty.txt": folder / "sub" / "empty.txt",
        "proj/data/naïve name.txt": folder / "naïve name.txt",
        "proj/single.csv": single,
    }

    uploaded = cli.json(
        "upload", str(folder), str(single), "--to", "proj", "--parallel", "3", "--chunk-size", "256K"
    )
    assert {u["path"] for u in uploaded} == set(expected)
    for item in uploaded:
        local = expected[item["path"]]
        assert item["size"] == local.stat().st_size
        assert item["sha256"] == _sha256(local)
    assert _state_entries(cli) == {}  # nothing left to resume
    assert "proj/data/sub/deeper" in cli.ok("files", "proj/data/sub")

    # without --json: one line per stored file on stdout (path, size, sha256), progress lines on stderr
    single.write_text("t,v\n0,2\n")
    r = cli.run("upload", str(single), "--to", "proj")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"proj/single.csv  {single.stat().st_size} bytes  sha256:{_sha256(single)}"
    assert f"uploaded {single} → proj/single.csv" in r.stderr

    # a file comes back as itself, checked against its SHA-256
    into = tmp_path / "dl"
    into.mkdir()
    got = cli.json("download", "proj/data/a.bin", str(into))
    assert got[0]["local"] == str(into / "a.bin")
    assert (into / "a.bin").read_bytes() == (folder / "a.bin").read_bytes()

    # a folder as NAME.zip, or unpacked with --extract
    zipped = cli.json("download", "proj/data", str(into))
    assert zipped[0]["local"] == str(into / "data.zip")
    with zipfile.ZipFile(into / "data.zip") as zf:
        assert zf.read("data/sub/deeper/c.bin") == (folder / "sub" / "deeper" / "c.bin").read_bytes()
    unpacked = tmp_path / "unpacked"
    cli.ok("download", "proj/data", str(unpacked), "--extract")
    for remote, local in expected.items():
        if remote.startswith("proj/data/"):
            assert (unpacked / remote.removeprefix("proj/")).read_bytes() == local.read_bytes()
    assert sorted(p.name for p in unpacked.iterdir()) == ["data"]  # no temporary zip left

    missing = cli.run("download", "proj/nothing-here")
    assert missing.returncode != 0 and "no file or folder" in missing.stderr
    hostile = cli.run("upload", str(single), "--to", "../outside")
    assert hostile.returncode != 0 and "upload-metadata.path" in hostile.stderr


class CuttingProxy:
    """A TCP proxy in front of the server that can cut the line: after ``budget`` bytes towards the server
    it closes every connection, then (``down``) refuses new ones, or (not ``down``) lets them through.
    ``forwarded`` counts the bytes that went towards the server."""

    def __init__(self, upstream: str) -> None:
        parts = urlsplit(upstream)
        self.target = (parts.hostname or "127.0.0.1", parts.port or 80)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        self.lock = threading.Lock()
        self.budget: int | None = None
        self.down_after_cut = False
        self.down = False
        self.forwarded = 0
        self.open: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def reset(self, budget: int | None = None, down_after_cut: bool = False) -> None:
        with self.lock:
            self.budget, self.down_after_cut, self.down, self.forwarded = budget, down_after_cut, False, 0

    def close(self) -> None:
        self.listener.close()
        self._cut()

    def _cut(self) -> None:
        with self.lock:
            sockets, self.open = self.open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if self.down:
                client.close()
                continue
            upstream = socket.create_connection(self.target)
            with self.lock:
                self.open += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                cut = False
                if counted:
                    with self.lock:
                        if self.budget is not None and self.forwarded + len(data) >= self.budget:
                            data = data[: self.budget - self.forwarded]
                            cut = True
                        self.forwarded += len(data)
                dst.sendall(data)
                if cut:
                    with self.lock:
                        self.budget = None
                        self.down = self.down_after_cut
                    self._cut()
                    return
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def test_an_interrupted_upload_resumes_where_it_stopped(cli: Server, tmp_path: Path) -> None:
    proxy = CuttingProxy(cli.url)
    token = json.loads(cli.config.read_text())["token"]
    env = cli.env(LABCLOUD_SERVER=proxy.url, LABCLOUD_TOKEN=token)
    try:
        # the line drops once mid-upload: the client waits, asks for the offset and finishes in the same run
        first = tmp_path / "first.bin"
        first.write_bytes(os.urandom(3 * 2**20))
        proxy.reset(budget=3 * 2**19)
        r = cli.run("upload", str(first), "--chunk-size", "256K", "--json", env=env)
        assert r.returncode == 0, r.stderr
        assert "retrying" in r.stderr
        assert json.loads(r.stdout)[0]["sha256"] == _sha256(first)

        # the line drops for good: the command gives up, the server keeps what arrived ...
        second = tmp_path / "second.bin"
        size = 4 * 2**20
        second.write_bytes(os.urandom(size))
        proxy.reset(budget=5 * 2**19, down_after_cut=True)
        command = ("upload", str(second), "--to", "resumed", "--chunk-size", "512K", "--retries", "1")
        failed = cli.run(*command, env=env)
        assert failed.returncode == 1
        assert "cannot reach the server" in failed.stderr
        [entry] = _state_entries(cli).values()
        upload_path = urlsplit(entry["url"]).path
        offset = int(
            httpx.head(
                cli.url + upload_path, headers={"Authorization": f"Bearer {token}", "Tus-Resumable": "1.0.0"}
            ).headers["Upload-Offset"]
        )
        assert 2**20 <= offset < size

        # ... and the same command, run again, continues from there instead of starting from 0
        proxy.reset()
        again = cli.run(*command, "--json", env=env)
        assert again.returncode == 0, again.stderr
        assert f"resuming at byte {offset} of {size}" in again.stderr
        assert proxy.forwarded < size - offset + 64 * 1024  # the rest and a few headers, not the whole file
        [stored] = json.loads(again.stdout)
        assert stored["path"] == "resumed/second.bin" and stored["sha256"] == _sha256(second)
        assert _state_entries(cli) == {}
    finally:
        proxy.close()
    got = tmp_path / "second.back"
    cli.ok("download", "resumed/second.bin", str(got))
    assert got.read_bytes() == second.read_bytes()


def test_a_stored_file_that_differs_from_the_local_one_fails_loudly(
    cli: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from labcloud.client.connection import Connection
    from labcloud.client.errors import UploadMismatch

    token = json.loads(cli.config.read_text())["token"]
    local = tmp_path / "x.bin"
    local.write_bytes(os.urandom(100_000))
    real_append = Connection.tus_append

    def corrupting(self: Connection, url: str, offset: int, data: bytes) -> httpx.Response:
        return real_append(self, url, offset, bytes([data[0] ^ 1]) + data[1:])  # damaged before the wire

    monkeypatch.setattr(Connection, "tus_append", corrupting)
    with Connection(cli.url, token) as client, pytest.raises(UploadMismatch) as caught:
        client.upload(local, "x.bin")
    assert "SHA-256" in caught.value.detail and _sha256(local) in caught.value.detail


def test_a_lost_answer_to_the_last_chunk_is_recognised(
    cli: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The file was stored but the answer never arrived: the upload is gone from the server, and the client
    finds the stored file with its own SHA-256 instead of uploading it again."""
    from labcloud.client.connection import Connection
    from labcloud.client.errors import ClientError

    token = json.loads(cli.config.read_text())["token"]
    local = tmp_path / "y.bin"
    local.write_bytes(os.urandom(300_000))
    real_append = Connection.tus_append
    sent: list[int] = []

    def answer_lost(self: Connection, url: str, offset: int, data: bytes) -> httpx.Response:
        answer = real_append(self, url, offset, data)
        sent.append(len(data))
        if "Labcloud-File-Sha256" in answer.headers:
            raise ClientError(0, "the connection dropped before the answer")
        return answer

    monkeypatch.setattr(Connection, "tus_append", answer_lost)
    with Connection(cli.url, token) as client:
        stored = client.upload(local, "lost/y.bin", chunk_size=100_000)
    assert stored["path"] == "lost/y.bin" and stored["sha256"] == _sha256(local)
    assert sent == [100_000, 100_000, 100_000]  # nothing was sent twice
