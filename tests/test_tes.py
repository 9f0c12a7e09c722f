"""GA4GH TES 1.1 at /ga4gh/tes/v1 on real container engines: tasks run their executors in turn, take inputs
from the caller's space, inline content and http, deliver outputs to the caller's space, and every answer
has exactly the fields of its view."""

from __future__ import annotations

import http.server
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Account
from labcloud.settings import Settings
from live_server import eventually
from test_containers import use_engine
from testing.engines import IMAGE, EngineCLI

pytestmark = [pytest.mark.containers, pytest.mark.db_agnostic]
TES = "/ga4gh/tes/v1"
ENDED = {"COMPLETE", "EXECUTOR_ERROR", "SYSTEM_ERROR", "CANCELED"}


@pytest.fixture
def tes_client(settings: Settings, docker_cli: EngineCLI, request: pytest.FixtureRequest) -> TestClient:
    """The test server on the test's Docker daemon (tests list this before ``user``)."""
    use_engine(settings, docker_cli)
    settings.tes_download_private = True  # the test's own web server is on 127.0.0.1
    client: TestClient = request.getfixturevalue("client")
    return client


def create(client: TestClient, user: Account, task: dict[str, Any]) -> str:
    r = client.post(f"{TES}/tasks", json=task, headers=user.headers)
    assert r.status_code == 200, r.text
    assert set(r.json()) == {"id"}
    task_id: str = r.json()["id"]
    return task_id


def wait(client: TestClient, user: Account, task_id: str, timeout: float = 120) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        r = client.get(f"{TES}/tasks/{task_id}", params={"view": "FULL"}, headers=user.headers)
        assert r.status_code == 200, r.text
        task: dict[str, Any] = r.json()
        return task if task["state"] in ENDED else None

    return eventually(ended, timeout, f"task {task_id} to end", interval=0.2)


def put_file(client: TestClient, user: Account, path: str, data: bytes) -> None:
    r = client.put(
        f"/api/v1/files/{path}", content=data, headers={**user.headers, "Content-Type": "text/plain"}
    )
    assert r.status_code in (200, 201), r.text


def get_file(client: TestClient, user: Account, path: str) -> bytes:
    r = client.get(f"/api/v1/files/{path}", headers=user.headers)
    assert r.status_code == 200, (path, r.text)
    return r.content


def test_a_task_runs_its_executors_in_turn_with_its_inputs_volumes_and_outputs(
    tes_client: TestClient, user: Account
) -> None:
    client = tes_client
    put_file(client, user, "data/words.txt", b"one two three\n")
    put_file(client, user, "data/ref/a.txt", b"A\n")
    put_file(client, user, "data/ref/sub/b.txt", b"B\n")
    secret = "token=do-not-show-me"
    task = {
        "name": "two steps",
        "description": "counts words",
        "inputs": [
            {"url": "labcloud:///data/words.txt", "path": "/in/words.txt"},
            {"url": "data/ref", "path": "/in/reference", "type": "DIRECTORY"},
            {"content": f"echo from script\n# {secret}\n", "path": "/in/script.sh"},
        ],
        "outputs": [
            {"url": "labcloud:///results/count.txt", "path": "/out/count.txt"},
            {"url": "labcloud:///results/all", "path": "/out", "type": "DIRECTORY"},
            {"url": "results/logs", "path": "/work/*.log", "path_prefix": "/work"},
        ],
        "volumes": ["/vol"],
        "executors": [
            {
                "image": IMAGE,
                "command": [
                    "sh",
                    "-c",
                    "wc -w < /in/words.txt > /vol/n; ls -R /in/reference; sh /in/script.sh",
                ],
                "env": {"GREETING": "hello"},
            },
            {
                "image": IMAGE,
                "command": ["sh", "-c", 'echo "$GREETING $(cat /vol/n)"; cat /in/reference/sub/b.txt >&2'],
                "env": {"GREETING": "words:"},
                "stdout": "/out/count.txt",
                "stderr": "/work/step2.log",
                "workdir": "/vol",
            },
            {"image": IMAGE, "command": ["sh", "-c", "exit 4"], "ignore_error": True},
        ],
        "tags": {"WORKFLOW_ID": "wf-1", "PROJECT": "lab"},
        "resources": {"cpu_cores": 1, "ram_gb": 0.25},
    }
    task_id = create(client, user, task)
    done = wait(client, user, task_id)
    assert done["state"] == "COMPLETE", done
    assert get_file(client, user, "results/count.txt") == b"words: 3\n"
    assert get_file(client, user, "results/all/count.txt") == b"words: 3\n"
    assert get_file(client, user, "results/logs/step2.log") == b"B\n"
    (log,) = done["logs"]
    assert [e["exit_code"] for e in log["logs"]] == [0, 0, 4]
    assert "from script" in log["logs"][0]["stdout"] and "sub" in log["logs"][0]["stdout"]
    assert all(e["start_time"] <= e["end_time"] for e in log["logs"])
    delivered = {o["url"]: o for o in log["outputs"]}
    assert delivered["labcloud:///results/count.txt"] == {
        "url": "labcloud:///results/count.txt",
        "path": "/out/count.txt",
        "size_bytes": "9",
    }
    assert "labcloud:///results/logs/step2.log" in delivered
    assert done["inputs"][2] == {"path": "/in/script.sh", "type": "FILE"}  # the content is never shown
    assert secret not in str(done)
    job_log = client.get(f"/api/v1/jobs/{task_id}/logs", headers=user.headers).text
    assert secret not in job_log
    basic = client.get(f"{TES}/tasks/{task_id}", params={"view": "BASIC"}, headers=user.headers).json()
    assert "system_logs" not in basic["logs"][0]
    assert all("stdout" not in e and "stderr" not in e for e in basic["logs"][0]["logs"])
    minimal = client.get(f"{TES}/tasks/{task_id}", headers=user.headers).json()
    assert minimal == {"id": task_id, "state": "COMPLETE"}


def test_a_failing_executor_stops_the_task(tes_client: TestClient, user: Account) -> None:
    client = tes_client
    task_id = create(
        client,
        user,
        {
            "executors": [
                {"image": IMAGE, "command": ["sh", "-c", "echo first; exit 3"]},
                {"image": IMAGE, "command": ["echo", "never"]},
            ]
        },
    )
    done = wait(client, user, task_id)
    assert done["state"] == "EXECUTOR_ERROR", done
    assert [e["exit_code"] for e in done["logs"][0]["logs"]] == [3]


class _Files(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "/data.txt")
            self.end_headers()
            return
        if self.path != "/data.txt":
            self.send_error(404)
            return
        body = b"served over http\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def web() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Files)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_inputs_are_downloaded_by_the_server(tes_client: TestClient, user: Account, web: str) -> None:
    client = tes_client
    task_id = create(
        client,
        user,
        {
            "inputs": [{"url": f"{web}/moved", "path": "/in/data.txt"}],
            "outputs": [{"url": "labcloud:///copy.txt", "path": "/out/copy.txt"}],
            "executors": [{"image": IMAGE, "command": ["cp", "/in/data.txt", "/out/copy.txt"]}],
        },
    )
    done = wait(client, user, task_id)
    assert done["state"] == "COMPLETE", done
    assert get_file(client, user, "copy.txt") == b"served over http\n"
    missing = create(
        client,
        user,
        {
            "inputs": [{"url": f"{web}/nothing", "path": "/in/x"}],
            "executors": [{"image": IMAGE, "command": ["true"]}],
        },
    )
    failed = wait(client, user, missing)
    assert failed["state"] == "SYSTEM_ERROR", failed
    assert any("404" in line for line in failed["logs"][0]["system_logs"]), failed


def test_cancel_stops_a_running_task(tes_client: TestClient, user: Account) -> None:
    client = tes_client
    task_id = create(client, user, {"executors": [{"image": IMAGE, "command": ["sleep", "60"]}]})
    eventually(
        lambda: client.get(f"{TES}/tasks/{task_id}", headers=user.headers).json()["state"] == "RUNNING",
        60,
        "the task to run",
    )
    started = time.monotonic()
    r = client.post(f"{TES}/tasks/{task_id}:cancel", headers=user.headers)
    assert r.status_code == 200 and r.json() == {}
    assert wait(client, user, task_id)["state"] == "CANCELED"
    assert time.monotonic() - started < 30
