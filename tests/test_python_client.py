"""The Python client (``labcloud.client``) against a real ``labcloud serve``: the README's example exactly as
it is written, problem details on every kind of failure, listings over many pages, resumed uploads, and the
asyncio twin."""

from __future__ import annotations

import asyncio
import doctest
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import labcloud_demo
from labcloud.client import (
    AsyncClient,
    Client,
    ClientError,
    Conflict,
    Forbidden,
    NotFound,
    NotLoggedIn,
    QuotaExceeded,
    RateLimited,
    ServiceUnavailable,
    Unauthorized,
    Unreachable,
    ValidationError,
    WaitTimeout,
)
from labcloud.client.config import UploadState
from labcloud.client.models import ProjectDetail, ProjectInfo, Quota, QuotaRequest, UsageRow
from labcloud.client.sse import SseEvent, SseParser
from labcloud.settings import Settings
from live_server import ADMIN_EMAIL, ADMIN_PASSWORD, Server

pytestmark = pytest.mark.db_agnostic  # the client side; the server's database is tested elsewhere

README = Path(__file__).resolve().parent.parent / "README.md"
SAMPLE_TRACE = Path(labcloud_demo.__file__).parent / "samples" / "trace.csv"
EXAMPLE_MARK = "<!-- the Python client example:"


def readme_example() -> tuple[str, int]:
    """The Python block that follows the example's mark in the README, and its first line's number."""
    text = README.read_text(encoding="utf-8")
    start = text.index(EXAMPLE_MARK)
    opening = text.index("```python\n", start) + len("```python\n")
    closing = text.index("\n```", opening)
    return text[opening : closing + 1], text.count("\n", 0, opening) + 1


@pytest.fixture
def env(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Server:
    """The administrator logged in with ``labcloud login``; the client's files kept under ``tmp_path``,
    and nothing in the environment that points elsewhere."""
    server.login()
    monkeypatch.setenv("LABCLOUD_CLIENT_CONFIG", str(server.config))
    monkeypatch.delenv("LABCLOUD_SERVER", raising=False)
    monkeypatch.delenv("LABCLOUD_TOKEN", raising=False)
    work = tmp_path / "notebook"
    work.mkdir()
    monkeypatch.chdir(work)
    return server


@pytest.fixture
def client(env: Server) -> Any:
    with Client.from_env() as c:
        yield c


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_readme_example_runs_as_written(env: Server) -> None:
    shutil.copy(SAMPLE_TRACE, "trace.csv")
    source, line = readme_example()
    test = doctest.DocTestParser().get_doctest(source, {}, "README.md (Python)", str(README), line - 1)
    assert len(test.examples) > 20
    report: list[str] = []
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS)
    result = runner.run(test, out=report.append)
    assert result.failed == 0, "".join(report)
    assert json.loads(Path("results/summary.json").read_text())["threshold_sigma"] == 5
    # what it did is there for the command line too
    listed = env.json("jobs", "--tag", "study=demo", "--all")
    assert [job["params"]["threshold"] for job in listed["items"]] == [8, 6, 4, 5]


def test_from_env_reads_the_stored_login_and_the_environment(
    env: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Client.from_env() as client:
        assert client.server == env.url and client.me().email == ADMIN_EMAIL
    token = json.loads(env.config.read_text())["token"]
    monkeypatch.setenv("LABCLOUD_CLIENT_CONFIG", str(tmp_path / "nobody.json"))
    with pytest.raises(NotLoggedIn):
        Client.from_env(env.url)
    monkeypatch.setenv("LABCLOUD_SERVER", env.url)
    monkeypatch.setenv("LABCLOUD_TOKEN", token)
    with Client.from_env() as client:
        assert client.me().is_admin
    with Client.login(env.url, ADMIN_EMAIL, ADMIN_PASSWORD) as client:
        assert client.connection.token and client.connection.token != token


def test_failures_carry_the_problem_details(client: Client, env: Server, tmp_path: Path) -> None:
    with pytest.raises(NotFound) as missing:
        client.app("no-such-app")
    assert missing.value.status == 404 and missing.value.title == "Not found"
    assert missing.value.type.endswith("/not-found") and "no-such-app" in missing.value.detail
    assert missing.value.problem["status"] == 404

    with pytest.raises(ValidationError) as invalid:
        client.jobs.submit("hello", params={"times": 0, "nobody": 1})
    assert invalid.value.status == 422
    assert invalid.value.field is not None and invalid.value.field.startswith("params")
    assert set(invalid.value.fields) >= {"params.times"}
    assert all({"loc", "msg"} <= set(e) for e in invalid.value.errors)
    with pytest.raises(ValidationError) as missing_input:
        client.jobs.submit("spikes", inputs={"trace": "no/such.csv"})
    assert missing_input.value.field == "inputs.trace" and "no/such.csv" in str(missing_input.value)

    job = client.jobs.submit("hello", params={"name": "Ada", "times": 1}, wait=True, timeout=120)
    with pytest.raises(Conflict) as ended:
        job.cancel()
    assert "already ended" in ended.value.detail

    # a storage limit: 413 up front, saying how much room is left
    me = client.me()
    client.connection.request("PATCH", f"/users/{me.id}", json={"storage_limit_bytes": 1000})
    big = tmp_path / "big.bin"
    big.write_bytes(os.urandom(5000))
    with pytest.raises(QuotaExceeded) as full:
        client.files.upload(big, resume=False)
    assert full.value.status == 413 and "storage limit" in full.value.detail
    client.connection.request("PATCH", f"/users/{me.id}", json={"storage_limit_bytes": None})

    with Client(env.url, "lc_not-a-token") as stranger, pytest.raises(Unauthorized) as refused:
        stranger.apps()
    assert refused.value.status == 401
    with Client("http://127.0.0.1:9", "lc_x") as nowhere, pytest.raises(Unreachable) as unreachable:
        nowhere.apps()
    assert unreachable.value.status == 0 and "cannot reach" in unreachable.value.detail


def test_problem_answers_become_the_kind_their_status_says() -> None:
    def answer(status: int, body: Any, **headers: str) -> ClientError:
        request = httpx.Request("GET", "http://server/api/v1/x")
        return ClientError.from_response(httpx.Response(status, json=body, headers=headers, request=request))

    busy = answer(
        503,
        {"type": "t/busy", "title": "Service busy", "status": 503, "detail": "Try again."},
        **{"Retry-After": "1"},
    )
    assert isinstance(busy, ServiceUnavailable) and busy.retry_after == 1.0 and busy.title == "Service busy"
    throttled = answer(429, {"title": "Too many requests", "detail": "wait"}, **{"Retry-After": "8"})
    assert isinstance(throttled, RateLimited) and throttled.retry_after == 8.0
    quota = answer(
        403, {"type": "https://labcloud.dev/problems/quota-exceeded", "detail": "no CPU hours left"}
    )
    assert isinstance(quota, QuotaExceeded)
    # FastAPI's own shape, should a route answer without the problem handlers
    raw = answer(422, {"detail": [{"loc": ["body", "name"], "msg": "too long"}]})
    assert isinstance(raw, ValidationError) and raw.field == "name"
    proxy = ClientError.from_response(
        httpx.Response(502, text="<html>Bad Gateway</html>", request=httpx.Request("GET", "http://server/"))
    )
    assert proxy.status == 502 and "Bad Gateway" in proxy.detail


def test_listing_goes_through_every_page(client: Client) -> None:
    submitted = [client.jobs.submit("hello", params={"times": 1}, tags={"batch": "pages"}) for _ in range(5)]
    listed = list(client.jobs.list(tag={"batch": "pages"}, page_size=2))
    assert [j.id for j in listed] == [j.id for j in reversed(submitted)]  # newest first, over 3 pages
    first = client.connection.page("/jobs", {"tag": ["batch=pages"], "limit": 2})
    assert len(first["items"]) == 2 and first["next_cursor"]
    for job in listed:
        job.wait(timeout=120)
    done = list(client.jobs.list(tag="batch=pages", state=["succeeded", "failed"], page_size=3))
    assert len(done) == 5 and all(j.state == "succeeded" for j in done)
    assert list(client.jobs.list(tag={"batch": "pages"}, app="spikes")) == []


def test_an_interrupted_upload_resumes_where_it_stopped(client: Client, env: Server, tmp_path: Path) -> None:
    local = tmp_path / "recording.bin"
    size = 3 * 2**20
    local.write_bytes(os.urandom(size))

    class Interrupted(Exception):
        pass

    def stop_halfway(done: int, total: int | None) -> None:
        if done >= size // 2:
            raise Interrupted()  # the kernel died, say

    with pytest.raises(Interrupted):
        client.files.upload(local, to="raw", chunk_size=256 * 1024, progress=stop_halfway)
    assert len(UploadState()._load()) == 1  # the upload's address is remembered beside the login
    assert client.files.info("raw/recording.bin") is None

    seen: list[int] = []
    [stored] = client.files.upload(
        local, to="raw", chunk_size=256 * 1024, progress=lambda d, t: seen.append(d)
    )
    assert seen[0] >= size // 2  # the first report is the bytes the server already held
    assert stored.path == "raw/recording.bin" and stored.size == size and stored.sha256 == _sha256(local)
    assert UploadState()._load() == {}
    back = client.files.download("raw/recording.bin", tmp_path / "back.bin")
    assert back.read_bytes() == local.read_bytes()

    # folders keep their layout; a local file given as an input is uploaded first
    folder = tmp_path / "session"
    (folder / "day1").mkdir(parents=True)
    (folder / "day1" / "a.txt").write_text("one two three\n")
    (folder / "notes.txt").write_text("four\n")
    stored_files = client.files.upload(folder, to="data")
    assert sorted(f.path for f in stored_files) == ["data/session/day1/a.txt", "data/session/notes.txt"]
    assert [f.path for f in client.files.list("data/session")] == [
        "data/session/day1",
        "data/session/notes.txt",
    ]
    trace = tmp_path / "trace.csv"
    shutil.copy(SAMPLE_TRACE, trace)
    job = client.jobs.submit("spikes", inputs={"trace": trace}, wait=True, timeout=300)
    assert job.inputs == {"trace": "inputs/trace.csv"} and job.state == "succeeded", job.message
    assert client.files.info("inputs/trace.csv").sha256 == _sha256(trace)  # type: ignore[union-attr]


def test_a_job_can_be_waited_for_followed_cancelled_and_rerun(client: Client, tmp_path: Path) -> None:
    job = client.jobs.submit("hello", params={"name": "Ada", "times": 2}, name="greeting")
    lines = list(job.logs(follow=True))
    assert "Hello, Ada! (2/2)" in lines
    assert job.wait(timeout=120, check=True) is job and job.succeeded and job.exit_code == 0
    history = [event.to_state for event in job.events()]
    assert history[0] == "queued" and history[-1] == "succeeded"
    assert "Hello, Ada! (1/2)" in list(job.logs())
    [archive] = job.download(tmp_path / "all.zip", zip=True)
    assert archive.stat().st_size > 0
    again = job.rerun()
    assert again.rerun_of == job.id and again.id != job.id
    again.wait(timeout=120)
    job.delete()
    with pytest.raises(NotFound):
        client.jobs.get(job.id)

    slow = client.jobs.submit("lif", params={"duration_ms": 60000, "neurons": 2000})
    with pytest.raises(WaitTimeout) as late:
        slow.wait(timeout=0.5)
    assert isinstance(late.value, TimeoutError) and late.value.job is slow and not slow.ended
    slow.cancel()
    assert slow.wait(timeout=120).state == "cancelled"


def test_the_event_stream_is_split_into_lines_as_its_format_says() -> None:
    """CR LF, LF or a lone CR end a line, even a CR LF that comes in two chunks; nothing else does."""
    parser = SseParser()
    chunks = ["event: log\r", "\ndata: a\u2028b\x0cc\r", "data: d\n", "id: 7\r\n\r", "\n", "event: end\n\n"]
    events = [event for chunk in chunks for event in parser.feed_text(chunk)]
    assert events == [SseEvent("log", ["a\u2028b\x0cc", "d"], "7"), SseEvent("end", [], None)]


def test_a_followed_log_keeps_every_character_of_its_lines(client: Client, settings: Settings) -> None:
    """The event stream ends its lines at CR and LF only: characters that Python's ``splitlines`` also
    takes for line ends (form feed, the Unicode line and paragraph separators...) stay inside a log line."""
    job = client.jobs.submit("hello", params={"times": 1}, wait=True, timeout=120)
    lines = [
        "form\x0cfeed",
        "tab\x0bbed",
        "sep\x1cfs",
        "next\x85line",
        "line\u2028sep",
        "par\u2029sep",
        "\u00e9t\u00e9",
    ]
    (settings.jobs_dir / job.id / "job.log").write_bytes("".join(f"{line}\n" for line in lines).encode())
    assert list(job.logs(follow=True)) == lines

    async def followed() -> list[str]:
        async with AsyncClient.from_env() as aclient:
            return [line async for line in (await aclient.jobs.get(job.id)).logs(follow=True)]

    assert asyncio.run(followed()) == lines


def test_the_async_client(env: Server, tmp_path: Path) -> None:
    local = tmp_path / "trace.csv"
    shutil.copy(SAMPLE_TRACE, local)

    async def session() -> None:
        async with AsyncClient.from_env() as client:
            assert (await client.me()).email == ADMIN_EMAIL
            assert "hello" in [app.name for app in await client.apps()]
            assert (await client.app("hello")).entrypoint().defaults() == {"name": "world", "times": 3}
            [stored] = await client.files.upload(local, to="async")
            assert stored.path == "async/trace.csv" and stored.sha256 == _sha256(local)
            assert [f.path async for f in client.files.list("async")] == ["async/trace.csv"]

            jobs = await asyncio.gather(
                *(client.jobs.submit("hello", params={"times": 1}, tags={"run": "async"}) for _ in range(3)),
                client.jobs.submit("spikes", inputs={"trace": "async/trace.csv"}, tags={"run": "async"}),
            )
            followed = [line async for line in jobs[0].logs(follow=True)]
            assert "Hello, world! (1/1)" in followed
            ended = await asyncio.gather(*(job.wait(timeout=300) for job in jobs))
            assert [job.state for job in ended] == ["succeeded"] * 4
            listed = [job.id async for job in client.jobs.list(tag={"run": "async"}, page_size=1)]
            assert sorted(listed) == sorted(job.id for job in jobs)
            written = await jobs[3].download(tmp_path / "counted")
            assert [p.name for p in written] and all(p.exists() for p in written)
            assert [o.path for o in await jobs[3].outputs()] == [p.name for p in written]
            got = await client.files.download("async/trace.csv", tmp_path / "back.csv")
            assert got.read_bytes() == local.read_bytes()
            with pytest.raises(NotFound):
                await client.jobs.get("01a24b81-0000-7000-8000-000000000000")
            with pytest.raises(ValidationError) as invalid:
                await client.jobs.submit("hello", params={"times": "many"})
            assert invalid.value.field == "params.times"
            await client.files.delete("async")
            assert await client.files.info("async/trace.csv") is None

    asyncio.run(session())
    with pytest.raises(Unauthorized):
        asyncio.run(AsyncClient.login(env.url, ADMIN_EMAIL, "wrong-password"))


def _account(admin: Client, name: str) -> Client:
    """A new user (the administrator invites them), logged in."""
    email, password = f"{name}@example.org", f"{name}-password-1"
    admin.connection.request("POST", "/users", json={"email": email, "password": password})
    return Client.login(admin.server, email, password)


def test_projects_share_jobs_between_their_members(client: Client) -> None:
    lab = client.projects.create("Vision Lab", slug="vision", description="retina recordings")
    assert isinstance(lab, ProjectDetail) and lab.role == "owner" and not lab.personal
    with (
        _account(client, "member") as member,
        _account(client, "viewer") as viewer,
        _account(client, "outsider") as outsider,
    ):
        client.projects.add_member("vision", "member@example.org")
        added = client.projects.add_member("vision", "viewer@example.org", role="viewer")
        assert [(m.email, m.role) for m in added.members] == [
            (ADMIN_EMAIL, "owner"),
            ("member@example.org", "member"),
            ("viewer@example.org", "viewer"),
        ]

        # a member runs a job in the project by its slug; a viewer sees it among the project's jobs
        job = member.jobs.submit("hello", params={"times": 1}, project="vision")
        assert job.project == "vision"
        theirs = viewer.projects.list()
        assert all(isinstance(p, ProjectInfo) for p in theirs)
        assert [(p.personal, p.role) for p in theirs] == [(True, "owner"), (False, "viewer")]
        assert [j.id for j in viewer.jobs.list(project="vision")] == [job.id]
        assert list(viewer.jobs.list()) == []  # without a project: one's own jobs
        with pytest.raises(ValidationError) as refused:
            viewer.jobs.submit("hello", project="vision")
        assert refused.value.field == "project" and "viewer" in refused.value.detail
        with pytest.raises(Forbidden) as too_low:
            viewer.projects.join_code("vision")
        assert "manager" in too_low.value.detail

        # to an outsider the project and its jobs do not exist
        with pytest.raises(NotFound) as hidden:
            list(outsider.jobs.list(project="vision"))
        assert "vision" in hidden.value.detail
        with pytest.raises(NotFound):
            outsider.projects.get("vision")
        with pytest.raises(NotFound):
            outsider.jobs.get(job.id)

        # roles change and members go by email; a join code lets the outsider in, as a member
        changed = client.projects.set_role("vision", "Viewer@example.org", "member")
        assert [m.role for m in changed.members if m.email == "viewer@example.org"] == ["member"]
        client.projects.remove_member("vision", "viewer@example.org")
        member.projects.leave("vision")
        code = client.projects.join_code("vision", days=3)
        assert outsider.projects.join(code.code).role == "member"
        now = client.projects.get("vision")
        assert [m.email for m in now.members] == [ADMIN_EMAIL, "outsider@example.org"]
        assert now.join_code_expires_at == code.expires_at
        with pytest.raises(NotFound) as gone:
            client.projects.remove_member("vision", "viewer@example.org")
        assert "no member" in gone.value.detail

        async def as_the_newcomer(token: str) -> list[str]:
            async with AsyncClient(client.server, token) as aclient:
                assert (await aclient.projects.get("vision")).role == "member"
                submitted = await aclient.jobs.submit("hello", params={"times": 1}, project="vision")
                assert submitted.project == "vision"
                return [j.id async for j in aclient.jobs.list(project="vision")]

        listed = asyncio.run(as_the_newcomer(str(outsider.connection.token)))
        assert len(listed) == 2 and listed[1] == job.id


def test_a_projects_quotas_requests_and_usage(client: Client) -> None:
    client.projects.create("Budget", slug="budget")
    with _account(client, "member") as member:
        client.projects.add_member("budget", "member@example.org")
        # an admin sets quotas; an allocation's dates may be dates
        [cpu] = client.projects.set_quota("budget", "cpu_hours", 10)
        assert isinstance(cpu, Quota) and (cpu.limit, cpu.period, cpu.level) == (10, "monthly", "ok")
        both = client.projects.set_quota(
            "budget",
            "gpu_hours",
            2,
            period="allocation",
            starts_at=date(2020, 1, 1),
            ends_at="2100-01-01T00:00:00Z",
        )
        assert [(q.resource, q.starts_at) for q in both] == [
            ("cpu_hours", None),
            ("gpu_hours", datetime(2020, 1, 1, tzinfo=UTC)),
        ]
        with pytest.raises(Forbidden):
            member.projects.set_quota("budget", "cpu_hours", 1000)

        # a job's CPU-hours are charged when it ends
        member.jobs.submit("hello", params={"times": 1}, project="budget", wait=True)
        [cpu, _] = member.projects.quotas("budget")
        assert 0 < cpu.used < 0.1 and cpu.reserved == 0 and cpu.left == pytest.approx(10 - cpu.used)

        # a member asks for more, an owner or admin decides, once
        with pytest.raises(ValidationError) as bad:
            member.projects.request_more("budget", "jobs_per_day", -1, "why")
        assert set(bad.value.fields) == {"resource", "amount", "justification"}
        asked = member.projects.request_more("budget", "cpu_hours", 15, "the spring campaign needs more fits")
        assert isinstance(asked, QuotaRequest) and asked.state == "pending"
        with pytest.raises(Forbidden):
            member.projects.approve("budget", asked.id)
        approved = client.projects.approve("budget", asked.id, note="granted")
        assert (approved.state, approved.note, approved.requested_by) == (
            "approved",
            "granted",
            member.me().id,
        )
        with pytest.raises(Conflict) as twice:
            client.projects.reject("budget", asked.id)
        assert "approved already" in twice.value.detail
        assert member.projects.quotas("budget")[0].limit == 25

        # the usage report: typed rows per user, app, executor or month, between two moments
        [row] = member.projects.usage("budget", by="app", since=datetime.now(UTC).date())
        assert isinstance(row, UsageRow) and (row.by, row.key, row.attempts) == ("app", "hello", 1)
        assert row.cpu_hours == pytest.approx(cpu.used)
        assert [r.key for r in member.projects.usage("budget")] == ["member@example.org"]
        assert member.projects.usage("budget", until=datetime(2000, 1, 1)) == []

        async def the_twin(member_token: str, admin_token: str) -> list[Any]:
            async with (
                AsyncClient(client.server, member_token) as amember,
                AsyncClient(client.server, admin_token) as aadmin,
            ):
                again = await amember.projects.request_more(
                    "budget", "cpu_hours", 5, "one more round of fits"
                )
                rejected = await aadmin.projects.reject("budget", again.id, note="not this month")
                listed = await amember.projects.requests("budget")
                await aadmin.projects.set_quota("budget", "jobs_per_day", 50, period="daily")
                await aadmin.projects.remove_quota("budget", "gpu_hours")
                quotas = await amember.projects.quotas("budget")
                months = await amember.projects.usage("budget", by="month")
                return [rejected.state, [r.state for r in listed], [q.resource for q in quotas], months]

        state, states, resources, months = asyncio.run(
            the_twin(str(member.connection.token), str(client.connection.token))
        )
        assert (state, states, resources) == (
            "rejected",
            ["rejected", "approved"],
            ["cpu_hours", "jobs_per_day"],
        )
        assert [m.key for m in months] == [f"{datetime.now(UTC):%Y-%m}"]


def test_importing_the_client_or_the_commands_does_not_load_httpx() -> None:
    code = "import sys, labcloud.cli, labcloud.client; print('httpx' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"


def test_the_readme_example_is_the_block_the_test_reads() -> None:
    source, _ = readme_example()
    assert source.startswith(">>> from labcloud.client import Client")
    assert re.search(r"client\.close\(\)\n$", source)
