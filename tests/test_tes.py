"""GA4GH TES 1.1 at /ga4gh/tes/v1 on real container engines: tasks run their executors in turn, take inputs
from the caller's space, inline content and http, deliver outputs to the caller's space, and every answer
has exactly the fields of its view."""

from __future__ import annotations

import http.server
import io
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import sqlalchemy
import yaml
from fastapi.testclient import TestClient
from pydantic import SecretStr

from conftest import Account
from labcloud.db.models import TesTask
from labcloud.services import url_fetch
from labcloud.settings import Settings
from live_server import eventually
from test_containers import use_engine
from test_web import browser_login, csrf_of
from testing.engines import IMAGE, EngineCLI
from testing.seaweed import SeaweedFS

# What runs in containers does not depend on the database (the SQLite pass runs it); listing and deleting
# tasks do, and run on both.
pytestmark = [pytest.mark.containers]
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


@pytest.mark.db_agnostic
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
    browser = browser_login(client.app, user.email, user.password)  # a task is a job in the pages too
    page = browser.get(f"/jobs/{task_id}")
    assert page.status_code == 200 and "two steps" in page.text and secret not in page.text
    assert browser.get("/jobs").status_code == 200


@pytest.mark.db_agnostic
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


@pytest.mark.db_agnostic
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


@pytest.mark.db_agnostic
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


@pytest.mark.db_agnostic
def test_a_task_runs_again_with_its_inline_content_still_shown_nowhere(
    tes_client: TestClient, user: Account, admin: Account, make_user: Any
) -> None:
    """Run again through labcloud's own API, or the job's page: the same task as a new one, with the same
    inline content; only its owner may, and a task that cannot run any more says why."""
    client = tes_client
    secret = "token=run-me-again"
    put_file(client, user, "again/in.txt", b"from space\n")
    first = create(
        client,
        user,
        {
            "name": "again",
            "inputs": [
                {"content": f"{secret}\n", "path": "/in/secret.txt"},
                {"url": "labcloud:///again/in.txt", "path": "/in/space.txt"},
            ],
            "outputs": [{"url": "labcloud:///again/out", "path": "/out", "type": "DIRECTORY"}],
            "executors": [
                {"image": IMAGE, "command": ["sh", "-c", "cat /in/secret.txt /in/space.txt > /out/seen.txt"]}
            ],
            "tags": {"run": "again"},
        },
    )
    original = wait(client, user, first)
    assert original["state"] == "COMPLETE", original
    seen = f"{secret}\nfrom space\n".encode()
    assert get_file(client, user, "again/out/seen.txt") == seen
    assert client.delete("/api/v1/files/again/out/seen.txt", headers=user.headers).status_code == 204

    r = client.post(f"/api/v1/jobs/{first}/rerun", headers=user.headers)
    assert r.status_code == 201, r.text
    assert r.json()["rerun_of"] == first and r.json()["app"] == "tes" and secret not in r.text
    again = wait(client, user, r.json()["id"])
    assert again["state"] == "COMPLETE", again
    assert get_file(client, user, "again/out/seen.txt") == seen  # the same content, delivered again

    def given(task: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in task.items() if k not in ("id", "state", "logs", "creation_time")}

    assert given(again) == given(original) and again["inputs"][0] == {
        "path": "/in/secret.txt",
        "type": "FILE",
    }
    shown = [client.get(f"{TES}/tasks", params={"view": "FULL"}, headers=user.headers).text]
    for task_id in (first, again["id"]):
        shown.append(client.get(f"/api/v1/jobs/{task_id}", headers=user.headers).text)
        shown.append(client.get(f"/api/v1/jobs/{task_id}/logs", headers=user.headers).text)
    assert not [text for text in shown if secret in text]

    # the job's page: Run again starts it again, and the new job's page says which it repeats
    browser = browser_login(client.app, user.email, user.password)
    page = browser.get(f"/jobs/{first}")
    assert "Run again" in page.text and secret not in page.text
    r = browser.post(f"/jobs/{first}/rerun", data={"csrf_token": csrf_of(page.text)}, follow_redirects=False)
    assert r.status_code == 303, r.text
    third = r.headers["location"].rsplit("/", 1)[-1]
    page = browser.get(f"/jobs/{third}")
    assert page.status_code == 200 and f'rerun of <a href="/jobs/{first}">' in page.text
    assert secret not in page.text
    assert wait(client, user, third)["state"] == "COMPLETE"

    # only its owner runs a task again (its content and its files are theirs)
    assert client.post(f"/api/v1/jobs/{first}/rerun", headers=admin.headers).status_code == 403
    assert client.post(f"/api/v1/jobs/{first}/rerun", headers=make_user().headers).status_code == 404
    # checked as a new task is: an input gone refuses it, through the API and on the page
    assert client.delete("/api/v1/files/again/in.txt", headers=user.headers).status_code == 204
    r = client.post(f"/api/v1/jobs/{first}/rerun", headers=user.headers)
    assert r.status_code == 400 and "cannot run again" in r.text and "again/in.txt" in r.text, r.text
    page = browser.get(f"/jobs/{first}")
    r = browser.post(f"/jobs/{first}/rerun", data={"csrf_token": csrf_of(page.text)})
    assert r.status_code == 400 and "cannot run again" in r.text and secret not in r.text, r.text


# --- the spec's answers -------------------------------------------------------------------------------------


def spec_file() -> Path:
    """The TES 1.1 OpenAPI document, in shared/specs beside the checkout (or beside a folder above it)."""
    here = Path(__file__).resolve().parents[1]
    for folder in (here, *here.parents):
        found = folder.parent / "shared" / "specs" / "ga4gh-tes-1.1.openapi.yaml"
        if found.is_file():
            return found
    raise AssertionError("the GA4GH TES 1.1 spec is not in shared/specs beside the checkout")


# The service-info schemas the spec names by URL (GA4GH service-info 1.0.0), which no test can fetch: its
# required fields, written here.
SERVICE_INFO = {
    "Service": {
        "type": "object",
        "required": ["id", "name", "type", "organization", "version"],
        "properties": {
            "id": {"type": "string"},
            "name": {"type": "string"},
            "type": {"$ref": "#/components/schemas/ServiceType"},
            "description": {"type": "string"},
            "organization": {
                "type": "object",
                "required": ["name", "url"],
                "properties": {"name": {"type": "string"}, "url": {"type": "string"}},
            },
            "contactUrl": {"type": "string"},
            "documentationUrl": {"type": "string"},
            "createdAt": {"type": "string"},
            "updatedAt": {"type": "string"},
            "environment": {"type": "string"},
            "version": {"type": "string"},
        },
    },
    "ServiceType": {
        "type": "object",
        "required": ["group", "artifact", "version"],
        "properties": {
            "group": {"type": "string"},
            "artifact": {"type": "string"},
            "version": {"type": "string"},
        },
    },
}


def _strict(schema: Any) -> Any:
    """The schema with no other properties than it names (objects that name theirs, outside allOf)."""
    if isinstance(schema, dict):
        out = {k: (_strict(v) if k != "allOf" else v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    return schema


class _NoDates(yaml.SafeLoader):
    """YAML without its dates: the spec's examples hold some, and JSON Schema wants plain JSON."""


_NoDates.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in value if tag != "tag:yaml.org,2002:timestamp"]
    for key, value in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@pytest.fixture(scope="module")
def schemas() -> dict[str, Any]:
    spec = yaml.load(spec_file().read_text(), Loader=_NoDates)
    found: dict[str, Any] = _strict(spec["components"]["schemas"])
    text = json.dumps(found).replace(
        "https://raw.githubusercontent.com/ga4gh-discovery/ga4gh-service-info/v1.0.0/service-info.yaml"
        "#/components/schemas/",
        "#/components/schemas/",
    )
    found = json.loads(text) | SERVICE_INFO
    return found


# The schema of this server's OpenAPI document that describes each answer.
DESCRIBED = {
    "tesServiceInfo": "TesServiceInfo",
    "tesCreateTaskResponse": "TesCreateTaskResponse",
    "tesListTasksResponse": "TesListTasksResponse",
    "tesCancelTaskResponse": "TesCancelTaskResponse",
    "tesTask": "TesTask",
    "minimalTask": "TesTask",
}


def conforms(schemas: dict[str, Any], name: str, document: Any, described: dict[str, Any]) -> None:
    """``document`` is a valid ``name`` of the spec (a task of the MINIMAL view need not have executors),
    and what this server's OpenAPI document (its ``described`` schemas) says it answers."""
    components = dict(schemas)
    if name == "minimalTask":
        components[name] = {k: v for k, v in schemas["tesTask"].items() if k != "required"}
    for where, named in ((components, name), (described, DESCRIBED[name])):
        validator = jsonschema.Draft7Validator(
            {"$ref": f"#/components/schemas/{named}", "components": {"schemas": where}}
        )
        problems = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(document)]
        assert not problems, (named, problems, document)


@pytest.mark.db_agnostic
def test_every_answer_conforms_to_the_spec(
    tes_client: TestClient, user: Account, schemas: dict[str, Any]
) -> None:
    client = tes_client
    described = _strict(client.app.openapi()["components"]["schemas"])
    info = client.get(f"{TES}/service-info")
    assert info.status_code == 200
    conforms(schemas, "tesServiceInfo", info.json(), described)
    assert info.json()["type"] == {"group": "org.ga4gh", "artifact": "tes", "version": "1.1.0"}
    assert "labcloud:///" in info.json()["storage"]
    put_file(client, user, "in.txt", b"x\n")
    body = {
        "name": "conformance",
        "inputs": [
            {"url": "labcloud:///in.txt", "path": "/data/in.txt"},
            {"content": "c", "path": "/data/c"},
        ],
        "outputs": [{"url": "labcloud:///conf/out.txt", "path": "/data/out/out.txt"}],
        "resources": {"cpu_cores": 1, "ram_gb": 0.5, "disk_gb": 1, "preemptible": True, "zones": ["a"]},
        "volumes": ["/scratch"],
        "executors": [
            {"image": IMAGE, "command": ["sh", "-c", "cat /data/in.txt > /data/out/out.txt; echo hi"]}
        ],
        "tags": {"k": "v"},
    }
    r = client.post(f"{TES}/tasks", json=body, headers=user.headers)
    conforms(schemas, "tesCreateTaskResponse", r.json(), described)
    ended = wait(client, user, r.json()["id"])
    assert ended["state"] == "COMPLETE", ended
    failing = create(client, user, {"executors": [{"image": IMAGE, "command": ["false"]}]})
    wait(client, user, failing)
    queued = create(client, user, {"executors": [{"image": IMAGE, "command": ["sleep", "30"]}]})
    for task_id in (r.json()["id"], failing, queued):
        for view, name in (("MINIMAL", "minimalTask"), ("BASIC", "tesTask"), ("FULL", "tesTask")):
            answer = client.get(f"{TES}/tasks/{task_id}", params={"view": view}, headers=user.headers)
            conforms(schemas, name, answer.json(), described)
    for view in ("MINIMAL", "BASIC", "FULL"):
        listing = client.get(
            f"{TES}/tasks", params={"view": view, "page_size": 2}, headers=user.headers
        ).json()
        conforms(schemas, "tesListTasksResponse", listing | {"tasks": []}, described)
        for task in listing["tasks"]:
            conforms(schemas, "minimalTask" if view == "MINIMAL" else "tesTask", task, described)
    cancel = client.post(f"{TES}/tasks/{queued}:cancel", headers=user.headers)
    conforms(schemas, "tesCancelTaskResponse", cancel.json(), described)
    full = client.get(f"{TES}/tasks/{r.json()['id']}", params={"view": "FULL"}, headers=user.headers).json()
    given = {k: v for k, v in full.items() if k not in ("id", "state", "logs", "creation_time")}
    assert given["inputs"] == [
        {"url": "labcloud:///in.txt", "path": "/data/in.txt", "type": "FILE"},
        {"path": "/data/c", "type": "FILE"},
    ]
    assert given["resources"] == body["resources"] and given["tags"] == body["tags"]
    assert given["executors"] == body["executors"] and given["volumes"] == body["volumes"]
    assert full["logs"][0]["outputs"] == [
        {"url": "labcloud:///conf/out.txt", "path": "/data/out/out.txt", "size_bytes": "2"}
    ]


def test_lists_page_and_filter(tes_client: TestClient, user: Account, make_user: Any) -> None:
    client = tes_client
    made = []
    for i in range(5):
        task = {
            "name": f"{'align' if i % 2 else 'sort'}-{i}",
            "executors": [{"image": "labcloud/not-built:1", "command": ["true"]}],
            "tags": {"run": f"r{i % 2}", "shared": ""} if i < 4 else {"other": "x"},
        }
        made.append(create(client, user, task))
    other = make_user()
    create(client, other, {"name": "align-theirs", "executors": [{"image": IMAGE, "command": ["true"]}]})

    def listed(**params: Any) -> list[str]:
        found: list[str] = []
        token = None
        while True:
            query = dict(params) | ({"page_token": token} if token else {})
            r = client.get(f"{TES}/tasks", params=query, headers=user.headers)
            assert r.status_code == 200, r.text
            found += [t["id"] for t in r.json()["tasks"]]
            token = r.json().get("next_page_token")
            if not token:
                return found

    newest_first = list(reversed(made))
    assert listed(page_size=2) == newest_first
    assert listed(name_prefix="align") == [made[3], made[1]]
    assert listed(tag_key="run", tag_value="r0") == [made[2], made[0]]
    assert listed(tag_key=["run", "shared"], tag_value=["r1", ""]) == [made[3], made[1]]
    assert listed(tag_key="shared") == [made[3], made[2], made[1], made[0]]
    assert listed(tag_key="nothing") == []
    eventually(lambda: listed(state="SYSTEM_ERROR") == newest_first, 60, "the tasks to fail on their image")
    assert listed(state="COMPLETE") == [] and listed(state="PAUSED") == []
    for bad in (
        {"view": "ALL"},
        {"state": "DONE"},
        {"page_size": 0},
        {"page_size": 2048},
        {"page_size": "x"},
        {"page_token": "x"},
    ):
        assert client.get(f"{TES}/tasks", params=bad, headers=user.headers).status_code == 400, bad
    one = client.get(f"{TES}/tasks/{made[0]}", params={"view": "FULL"}, headers=user.headers).json()
    assert any("labcloud/not-built:1" in line for line in one["logs"][0]["system_logs"]), one
    # Tasks belong to their owner: another user's task is not found, for reading and for cancelling.
    assert client.get(f"{TES}/tasks/{made[0]}", headers=other.headers).status_code == 404
    assert client.post(f"{TES}/tasks/{made[0]}:cancel", headers=other.headers).status_code == 404
    assert client.get(f"{TES}/tasks/not-a-task", headers=user.headers).status_code == 404
    assert client.get(f"{TES}/tasks").status_code == 401


@pytest.mark.db_agnostic
def test_tasks_that_are_not_valid_are_refused_with_400(
    settings: Settings, docker_cli: EngineCLI, request: pytest.FixtureRequest
) -> None:
    use_engine(settings, docker_cli)
    settings.tes_allowed_images = ["labcloud/*"]
    client: TestClient = request.getfixturevalue("client")
    user: Account = request.getfixturevalue("user")
    ok = {"image": IMAGE, "command": ["true"]}
    bad_tasks: list[tuple[dict[str, Any], str]] = [
        ({"executors": []}, "executors"),
        ({"executors": [{"image": "docker.io/library/ubuntu:22.04", "command": ["true"]}]}, "not allowed"),
        ({"executors": [{"image": "--privileged", "command": ["true"]}]}, "image"),
        ({"executors": [{"image": IMAGE, "command": []}]}, "command"),
        ({"executors": [{**ok, "env": {"A": "x\ny"}}]}, "line break"),
        ({"executors": [{**ok, "workdir": "relative"}]}, "absolute"),
        ({"executors": [ok], "volumes": ["/proc/x"]}, "/proc"),
        ({"executors": [ok], "volumes": ["/run/docker.sock"]}, "/run"),
        ({"executors": [ok], "volumes": ["/a/../etc"]}, ".."),
        ({"executors": [ok], "volumes": ["/a,readonly=false"]}, "absolute path"),
        ({"executors": [ok], "inputs": [{"url": "s3://bucket/key", "path": "/in/x"}]}, "s3://"),
        ({"executors": [ok], "inputs": [{"url": "file:///etc/passwd", "path": "/in/x"}]}, "file://"),
        ({"executors": [ok], "inputs": [{"url": "labcloud:///missing.txt", "path": "/in/x"}]}, "no file"),
        ({"executors": [ok], "inputs": [{"path": "/in/x"}]}, "url or content"),
        ({"executors": [ok], "inputs": [{"content": "x" * (2 * 2**20), "path": "/in/x"}]}, "longer"),
        ({"executors": [ok], "outputs": [{"url": "s3://b/k", "path": "/out/x"}]}, "not enabled"),
        ({"executors": [ok], "outputs": [{"url": "gs://b/k", "path": "/out/x"}]}, "gs://"),
        ({"executors": [ok], "outputs": [{"url": "out", "path": "/out/*.txt"}]}, "path_prefix"),
        ({"executors": [ok], "outputs": [{"url": "out", "path": "/x.txt"}]}, "root folder"),
        ({"executors": [{**ok, "stdin": "/nowhere/x"}]}, "stdin"),
        ({"executors": [ok], "tags": {"": "x"}}, "tag"),
        ({"executors": [ok], "resources": {"ram_gb": 10_000}}, "MB here (asked for 10240000 MB)"),
        ({"executors": [ok], "resources": {"backend_parameters": {"timeout_s": "forever"}}}, "seconds"),
    ]
    for body, words in bad_tasks:
        r = client.post(f"{TES}/tasks", json=body, headers=user.headers)
        assert r.status_code == 400, (body, r.text)
        assert words in r.text, (words, r.text)
    assert client.get(f"{TES}/tasks", params={"view": "BASIC"}, headers=user.headers).json() == {"tasks": []}


@pytest.mark.db_agnostic
def test_backend_parameters(tes_client: TestClient, user: Account) -> None:
    client = tes_client
    params = {"timeout_s": "1", "VmSize": "big"}
    slow = create(
        client,
        user,
        {
            "executors": [{"image": IMAGE, "command": ["sleep", "30"]}],
            "resources": {"backend_parameters": params},
        },
    )
    ended = wait(client, user, slow)
    assert ended["state"] == "EXECUTOR_ERROR", ended  # its time limit, one second
    assert ended["resources"]["backend_parameters"] == {"timeout_s": "1"}  # unsupported keys are not kept
    assert any("VmSize" in line for line in ended["logs"][0]["system_logs"])
    strict = create(
        client,
        user,
        {
            "executors": [{"image": IMAGE, "command": ["true"]}],
            "resources": {"backend_parameters": params, "backend_parameters_strict": True},
        },
    )
    refused = client.get(f"{TES}/tasks/{strict}", params={"view": "FULL"}, headers=user.headers).json()
    assert refused["state"] == "SYSTEM_ERROR", refused
    assert any("VmSize" in line for line in refused["logs"][0]["system_logs"])
    # run again: the parameters kept, what was ignored said again, and a strict task refused again
    for task_id, state in ((slow, "EXECUTOR_ERROR"), (strict, "SYSTEM_ERROR")):
        r = client.post(f"/api/v1/jobs/{task_id}/rerun", headers=user.headers)
        assert r.status_code == 201, r.text
        again = wait(client, user, r.json()["id"])
        assert again["state"] == state, again
        assert again["resources"]["backend_parameters"] == {"timeout_s": "1"}
        assert any("VmSize" in line for line in again["logs"][0]["system_logs"]), again


def test_a_task_runs_in_the_project_its_backend_parameter_names(
    tes_client: TestClient, user: Account, make_user: Any
) -> None:
    client = tes_client
    other = make_user()
    for who, slug in ((user, "tes-lab"), (other, "elsewhere")):
        r = client.post("/api/v1/projects", json={"name": slug, "slug": slug}, headers=who.headers)
        assert r.status_code == 201, r.text
    ok = {"image": IMAGE, "command": ["true"]}
    task_id = create(
        client, user, {"executors": [ok], "resources": {"backend_parameters": {"project": "tes-lab"}}}
    )
    assert client.get(f"/api/v1/jobs/{task_id}", headers=user.headers).json()["project"] == "tes-lab"
    shown = client.get(f"{TES}/tasks/{task_id}", params={"view": "BASIC"}, headers=user.headers).json()
    assert shown["resources"]["backend_parameters"] == {"project": "tes-lab"}
    r = client.post(
        f"{TES}/tasks",
        json={"executors": [ok], "resources": {"backend_parameters": {"project": "elsewhere"}}},
        headers=user.headers,
    )
    assert r.status_code == 400 and "project" in r.text and "elsewhere" in r.text, r.text
    assert wait(client, user, task_id)["state"] == "COMPLETE"


def test_a_task_in_a_project_keeps_its_files_in_its_submitters_space(
    tes_client: TestClient, user: Account
) -> None:
    client = tes_client
    r = client.post("/api/v1/projects", json={"name": "tes-files", "slug": "tes-files"}, headers=user.headers)
    assert r.status_code == 201, r.text
    put_file(client, user, "in/words.txt", b"one two\n")
    task_id = create(
        client,
        user,
        {
            "inputs": [{"url": "labcloud:///in/words.txt", "path": "/in/words.txt"}],
            "outputs": [{"url": "labcloud:///out/copy.txt", "path": "/out/copy.txt"}],
            "executors": [{"image": IMAGE, "command": ["cp", "/in/words.txt", "/out/copy.txt"]}],
            "resources": {"backend_parameters": {"project": "tes-files"}},
        },
    )
    done = wait(client, user, task_id)
    assert done["state"] == "COMPLETE", done
    assert get_file(client, user, "out/copy.txt") == b"one two\n"
    project_top = client.get("/api/v1/files", params={"prefix": "projects/tes-files"}, headers=user.headers)
    assert project_top.status_code == 200 and project_top.json()["items"] == []


@pytest.mark.db_agnostic
def test_a_task_follows_no_link_it_planted(tes_client: TestClient, user: Account, tmp_path: Path) -> None:
    client = tes_client
    canary = tmp_path / "canary.txt"
    canary.write_text("untouched\n")
    task_id = create(
        client,
        user,
        {
            "outputs": [
                {"url": "labcloud:///esc/link.txt", "path": "/out/link.txt"},
                {"url": "labcloud:///esc/all", "path": "/out", "type": "DIRECTORY"},
            ],
            "executors": [
                {"image": IMAGE, "command": ["ln", "-s", str(canary), "/out/link.txt"]},
                {"image": IMAGE, "command": ["echo", "overwritten"], "stdout": "/out/link.txt"},
            ],
        },
    )
    ended = wait(client, user, task_id)
    assert ended["state"] == "SYSTEM_ERROR", ended
    assert canary.read_text() == "untouched\n"
    assert ended["logs"][0]["outputs"] == []
    assert client.get("/api/v1/files/esc/link.txt", headers=user.headers).status_code == 404


def test_a_deleted_task_takes_its_secret_content_with_it(
    tes_client: TestClient, user: Account, settings: Settings
) -> None:
    client = tes_client
    task_id = create(
        client,
        user,
        {
            "inputs": [{"content": "password=hunter2", "path": "/in/secret"}],
            "executors": [{"image": IMAGE, "command": ["true"]}],
        },
    )
    engine = sqlalchemy.create_engine(settings.effective_database_url)
    with engine.connect() as conn:
        (stored,) = conn.execute(sqlalchemy.select(TesTask.contents)).one()
    assert stored == {"0": "password=hunter2"}
    assert wait(client, user, task_id)["state"] == "COMPLETE"
    assert client.delete(f"/api/v1/jobs/{task_id}", headers=user.headers).status_code == 204
    assert client.get(f"{TES}/tasks/{task_id}", headers=user.headers).status_code == 404
    with engine.connect() as conn:
        assert conn.execute(sqlalchemy.select(TesTask.job_id)).all() == []
    engine.dispose()


@pytest.mark.db_agnostic
def test_downloads_never_reach_private_addresses_unless_allowed(web: str) -> None:
    sink = io.BytesIO()
    with pytest.raises(url_fetch.FetchError, match="does not download from"):
        url_fetch.download(f"{web}/data.txt", sink, limit=100)
    with pytest.raises(url_fetch.FetchError, match="larger than 5 bytes"):
        url_fetch.download(f"{web}/data.txt", sink, limit=5, allow_private=True)
    assert url_fetch.download(f"{web}/moved", io.BytesIO(), limit=100, allow_private=True) == 17
    with pytest.raises(url_fetch.FetchError, match="user name"):
        url_fetch.check_url("http://user:secret@example.org/x")


@pytest.mark.db_agnostic
def test_s3_inputs_and_outputs(
    settings: Settings,
    docker_cli: EngineCLI,
    seaweedfs: SeaweedFS,
    s3_bucket: str,
    request: pytest.FixtureRequest,
) -> None:
    use_engine(settings, docker_cli)
    settings.tes_s3_endpoint_url = seaweedfs.endpoint_url
    settings.tes_s3_region = seaweedfs.region
    settings.tes_s3_access_key_id = seaweedfs.access_key
    settings.tes_s3_secret_access_key = SecretStr(seaweedfs.secret_key)
    settings.tes_s3_buckets = [s3_bucket]
    client: TestClient = request.getfixturevalue("client")
    user: Account = request.getfixturevalue("user")
    s3 = seaweedfs.client()
    s3.put_object(Bucket=s3_bucket, Key="in/data.txt", Body=b"from s3\n")
    assert f"s3://{s3_bucket}" in client.get(f"{TES}/service-info").json()["storage"]
    task_id = create(
        client,
        user,
        {
            "inputs": [{"url": f"s3://{s3_bucket}/in/data.txt", "path": "/in/data.txt"}],
            "outputs": [
                {"url": f"s3://{s3_bucket}/out/copy.txt", "path": "/out/copy.txt"},
                {"url": f"s3://{s3_bucket}/out/all", "path": "/out", "type": "DIRECTORY"},
                {"url": "labcloud:///space/copy.txt", "path": "/out/copy.txt"},
            ],
            "executors": [
                {
                    "image": IMAGE,
                    "command": [
                        "sh",
                        "-c",
                        "cp /in/data.txt /out/copy.txt; mkdir /out/sub; echo x > /out/sub/x",
                    ],
                }
            ],
        },
    )
    done = wait(client, user, task_id)
    assert done["state"] == "COMPLETE", done

    def read(key: str) -> bytes:
        body: bytes = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read()
        return body

    assert read("out/copy.txt") == b"from s3\n" and read("out/all/copy.txt") == b"from s3\n"
    assert read("out/all/sub/x") == b"x\n"
    assert get_file(client, user, "space/copy.txt") == b"from s3\n"
    urls = sorted(o["url"] for o in done["logs"][0]["outputs"])
    assert urls == [
        "labcloud:///space/copy.txt",
        f"s3://{s3_bucket}/out/all/copy.txt",
        f"s3://{s3_bucket}/out/all/sub/x",
        f"s3://{s3_bucket}/out/copy.txt",
    ]
    ok = {"image": IMAGE, "command": ["true"]}
    for body, words in (
        ({"executors": [ok], "inputs": [{"url": "s3://elsewhere/k", "path": "/in/k"}]}, "not one tasks may"),
        (
            {
                "executors": [ok],
                "inputs": [{"url": f"s3://{s3_bucket}/in", "path": "/in", "type": "DIRECTORY"}],
            },
            "DIRECTORY",
        ),
        ({"executors": [ok], "inputs": [{"url": f"s3://{s3_bucket}/", "path": "/in/k"}]}, "names no object"),
    ):
        r = client.post(f"{TES}/tasks", json=body, headers=user.headers)
        assert r.status_code == 400 and words in r.text, (body, r.text)
    missing = create(
        client,
        user,
        {"inputs": [{"url": f"s3://{s3_bucket}/nothing", "path": "/in/x"}], "executors": [ok]},
    )
    failed = wait(client, user, missing)
    assert failed["state"] == "SYSTEM_ERROR", failed
    assert seaweedfs.secret_key not in str(failed)
