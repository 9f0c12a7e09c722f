"""The py-tes client (the GA4GH TES client workflow tools use) against a live ``labcloud serve`` on a real
Docker daemon: create with inputs and outputs, wait, the three views, pages of the list, cancel."""

from __future__ import annotations

import httpx
import pytest
import tes

from labcloud.settings import Settings
from live_server import Server, eventually, login_headers
from test_containers import use_engine
from testing.engines import IMAGE, EngineCLI

pytestmark = [pytest.mark.containers, pytest.mark.db_agnostic]


@pytest.fixture
def live(settings: Settings, docker_cli: EngineCLI, request: pytest.FixtureRequest) -> Server:
    use_engine(settings, docker_cli)
    server: Server = request.getfixturevalue("server")
    return server


def test_py_tes_creates_waits_reads_lists_and_cancels(live: Server) -> None:
    headers = login_headers(live.url)
    r = httpx.put(
        f"{live.url}/api/v1/files/in/words.txt",
        content=b"one two three four\n",
        headers=headers | {"Content-Type": "text/plain"},
    )
    assert r.status_code in (200, 201), r.text
    client = tes.HTTPClient(live.url, token=headers["Authorization"].removeprefix("Bearer "))

    info = client.get_service_info()
    assert info.type["artifact"] == "tes" and info.type["version"].startswith("1.1")
    assert "labcloud:///" in (info.storage or [])

    task = tes.Task(
        name="count words",
        inputs=[
            tes.Input(url="labcloud:///in/words.txt", path="/data/words.txt"),
            tes.Input(content="wc -w < /data/words.txt\n", path="/data/count.sh"),
        ],
        outputs=[tes.Output(url="labcloud:///out/count.txt", path="/data/out/count.txt")],
        executors=[
            tes.Executor(image=IMAGE, command=["sh", "/data/count.sh"], stdout="/data/out/count.txt"),
            tes.Executor(image=IMAGE, command=["cat", "/data/out/count.txt"]),
        ],
        tags={"workflow": "py-tes"},
    )
    task_id = client.create_task(task)
    done = client.wait(task_id, timeout=120)
    assert done.state == "COMPLETE", client.get_task(task_id, "FULL")
    assert done.as_dict() == {"id": task_id, "state": "COMPLETE"}  # wait reads the MINIMAL view

    full = client.get_task(task_id, "FULL")
    assert full.name == "count words" and full.tags == {"workflow": "py-tes"}
    assert [e.exit_code for e in full.logs[0].logs] == [0, 0]
    assert full.logs[0].logs[1].stdout.strip() == "4"
    assert full.logs[0].outputs[0].url == "labcloud:///out/count.txt"
    assert full.logs[0].outputs[0].size_bytes == 2
    assert full.inputs[1].content is None  # inline content is never shown back
    assert full.logs[0].system_logs is not None
    basic = client.get_task(task_id, "BASIC")
    assert basic.logs[0].system_logs is None and basic.logs[0].logs[0].stdout is None
    got = httpx.get(f"{live.url}/api/v1/files/out/count.txt", headers=headers)
    assert got.status_code == 200 and got.text.strip() == "4"

    more = [
        client.create_task(tes.Task(executors=[tes.Executor(image=IMAGE, command=["true"])]))
        for _ in range(3)
    ]
    seen: list[str] = []
    token = None
    while True:
        page = client.list_tasks(view="BASIC", page_size=2, page_token=token)
        assert len(page.tasks) <= 2
        seen += [t.id for t in page.tasks]
        token = page.next_page_token
        if not token:
            break
    assert seen == [*reversed(more), task_id]

    sleeper = client.create_task(tes.Task(executors=[tes.Executor(image=IMAGE, command=["sleep", "60"])]))
    eventually(lambda: client.get_task(sleeper).state == "RUNNING", 60, "the task to run")
    client.cancel_task(sleeper)
    assert client.wait(sleeper, timeout=60).state in ("CANCELING", "CANCELED")  # wait stops at either
    eventually(lambda: client.get_task(sleeper).state == "CANCELED", 60, "the task to be canceled")
