"""An app's container images on the server's engine, for admins: which the engine holds, pulling them (with
the registry credentials of ``container_auth_file``, which no answer or log line ever shows)."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Account
from image_registry import ImageRegistry, unreachable_registry, write_auth_file
from labcloud.execution import containers, engine_probe
from labcloud.execution.containers import ImageUnavailable
from labcloud.settings import Settings
from live_server import Server
from test_containers import use_engine
from testing.engines import IMAGE, EngineCLI

# What images an engine holds does not depend on the database: the SQLite pass runs these.
pytestmark = pytest.mark.db_agnostic

PASSWORD = "registry-password-of-the-lab"
MISSING = "labcloud/not-built:1"


def auth_file(folder: Path, registry: str) -> Path:
    return write_auth_file(folder / "registry-auth.json", registry, "lab", PASSWORD)


def secrets_of(path: Path) -> list[str]:
    """What must never be shown: the file's name (as given and resolved), its password and its content."""
    content = json.loads(path.read_text())
    token = next(iter(content["auths"].values()))["auth"]
    return [str(path), str(path.resolve()), PASSWORD, token, path.read_text()]


def write_app(apps_dir: Path, name: str, versions: dict[str, dict[str, str | None]]) -> None:
    """An app whose versions each map entrypoint names to an image (None: a process entrypoint)."""
    apps_dir.mkdir(parents=True, exist_ok=True)
    spec: dict[str, Any] = {"name": name, "versions": {}}
    for version, entrypoints in versions.items():
        entrypoints = entrypoints or {"main": None}
        spec["versions"][version] = {
            "default_entrypoint": next(iter(entrypoints)),
            "entrypoints": {
                ep: {"runtime": "container", "image": image, "command": ["true"]}
                if image
                else {"command": ["true"]}
                for ep, image in entrypoints.items()
            },
        }
    (apps_dir / f"{name}.yaml").write_text(json.dumps(spec))


ENGINES = pytest.mark.parametrize("kind", ["docker", "podman"])


def started(request: pytest.FixtureRequest, kind: str) -> EngineCLI:
    """The test setup's Docker or Podman (its fixture, started once a session)."""
    cli: EngineCLI = request.getfixturevalue(f"{kind}_cli")
    return cli


def image_id(cli: EngineCLI, image: str) -> str:
    found = cli.run("image", "inspect", "--format", "{{.Id}}", image).stdout.strip()
    return found if found.startswith("sha256:") else f"sha256:{found}"


@dataclasses.dataclass
class Served:
    client: TestClient
    settings: Settings
    cli: EngineCLI
    auth: Path
    unreachable: str  # host:port of a registry that cannot be reached


@pytest.fixture(params=["docker", "podman"])
def served(settings: Settings, tmp_path: Path, request: pytest.FixtureRequest) -> Served:
    """The test server on Docker, then on Podman, with an auth file for a registry that cannot be reached."""
    engine = started(request, request.param)
    use_engine(settings, engine)
    unreachable = unreachable_registry()
    settings.container_auth_file = auth_file(tmp_path / "private", unreachable)
    settings.container_pull_timeout_s = 60
    client: TestClient = request.getfixturevalue("client")
    return Served(client, settings, engine, settings.container_auth_file, unreachable)


@pytest.mark.containers
def test_admins_see_which_images_the_engine_holds(served: Served, admin: Account, user: Account) -> None:
    client, cli = served.client, served.cli
    write_app(
        served.settings.effective_apps_dir,
        "boxed",
        {"1.0": {"main": IMAGE, "plot": None}, "2.0": {"main": MISSING, "other": IMAGE}},
    )
    r = client.get("/api/v1/apps/boxed/images", headers=admin.headers)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["app"] == "boxed"
    rows = [(i["version"], i["entrypoint"], i["image"]) for i in body["items"]]
    assert rows == [("2.0", "main", MISSING), ("2.0", "other", IMAGE), ("1.0", "main", IMAGE)]  # no process
    missing, other, main = (item["engine"] for item in body["items"])
    assert other == main == {"kind": cli.kind, "present": True, "id": image_id(cli, IMAGE), "problem": None}
    assert missing["kind"] == cli.kind and missing["present"] is False and missing["id"] is None
    assert MISSING in missing["problem"], missing  # the engine's words
    for secret in secrets_of(served.auth):
        assert secret not in r.text

    assert client.get("/api/v1/apps/boxed/images", headers=user.headers).status_code == 403
    assert client.get("/api/v1/apps/nope/images", headers=admin.headers).status_code == 404
    process_only = client.get("/api/v1/apps/hello/images", headers=admin.headers)
    assert process_only.status_code == 200 and process_only.json()["items"] == []


@pytest.mark.containers
def test_a_pull_that_fails_is_a_result_with_the_engines_words_and_no_secret(
    served: Served, admin: Account, user: Account, caplog: pytest.LogCaptureFixture
) -> None:
    client = served.client
    old, new = f"{served.unreachable}/lab/tool:1", f"{served.unreachable}/lab/tool:2"
    write_app(
        served.settings.effective_apps_dir,
        "remote",
        {"1.0": {"main": old}, "2.0": {"main": new, "again": new, "plot": None}},
    )
    caplog.set_level(logging.DEBUG)

    latest = client.post("/api/v1/apps/remote/pull", headers=admin.headers)  # no body: the latest version
    assert latest.status_code == 200, latest.text
    body = latest.json()
    assert body["app"] == "remote" and body["version"] == "2.0"
    [result] = body["results"]  # one image, pulled once
    assert result["image"] == new and result["ok"] is False and result["id"] is None
    assert new in result["message"] and "connection refused" in result["message"], result

    older = client.post("/api/v1/apps/remote/pull", json={"version": "1.0"}, headers=admin.headers)
    assert older.status_code == 200, older.text
    assert older.json()["version"] == "1.0"
    assert [(r["image"], r["ok"]) for r in older.json()["results"]] == [(old, False)]

    for answer in (latest, older):
        for secret in secrets_of(served.auth):
            assert secret not in answer.text
    for secret in secrets_of(served.auth):
        assert secret not in caplog.text
    assert f"pulled image {new} of app remote 2.0: failed" in caplog.text  # the admin's pull is logged

    pull = "/api/v1/apps/remote/pull"
    assert client.post(pull, json={"version": "9"}, headers=admin.headers).status_code == 404
    assert client.post(pull, json={"tag": "1"}, headers=admin.headers).status_code == 422
    assert client.post(pull, headers=user.headers).status_code == 403
    hello = client.post("/api/v1/apps/hello/pull", json={}, headers=admin.headers)
    assert hello.status_code == 200 and hello.json()["results"] == []


@pytest.fixture
def registry() -> Iterator[ImageRegistry]:
    with ImageRegistry("lab", PASSWORD) as found:
        yield found


@pytest.mark.containers
@ENGINES
def test_a_pull_takes_the_auth_file_to_the_registry(
    kind: str, settings: Settings, registry: ImageRegistry, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = started(request, kind)
    ref = registry.add(f"lab/tool-{engine.kind}", "1")
    use_engine(settings, engine)
    found = engine_probe.find_engine(*settings.container_settings())
    if engine.kind == "podman":  # plain HTTP to this registry (Docker allows it on 127.0.0.0/8 by default)
        conf = registry.registries_conf(tmp_path / "registries.conf")
        found = dataclasses.replace(found, env={**found.env, "CONTAINERS_REGISTRIES_CONF": str(conf)})

    with pytest.raises(ImageUnavailable) as refused:  # no credentials: the registry says no
        found.pull(ref, timeout=60)
    assert ref in str(refused.value) and registry.expected not in registry.credentials, refused.value

    wrong = registry.auth_file(tmp_path / "wrong.json", "lab", "not-the-password")
    with pytest.raises(ImageUnavailable) as denied:
        dataclasses.replace(found, auth_file=wrong).pull(ref, timeout=60)
    assert registry.expected not in registry.credentials
    assert str(wrong) not in str(denied.value) and "not-the-password" not in str(denied.value)

    good = registry.auth_file(tmp_path / "private" / "auth.json", "lab", PASSWORD)
    pulled = dataclasses.replace(found, auth_file=good).pull(ref, timeout=60)
    assert registry.expected in registry.credentials  # the engine sent what the file holds
    assert pulled == image_id(engine, ref)

    gone = dataclasses.replace(found, auth_file=tmp_path / "private" / "gone.json")
    with pytest.raises(ImageUnavailable) as unreadable:
        gone.pull(ref, timeout=60)
    assert "container_auth_file cannot be read: No such file or directory" in str(unreadable.value)
    assert "gone.json" not in str(unreadable.value)


def test_the_engine_never_shows_the_auth_file(tmp_path: Path) -> None:
    path = auth_file(tmp_path / "private", "registry.example.org")
    engine = containers.Engine("podman", ("podman",), auth_file=path)
    said = " ".join(["open", str(path), str(path.resolve()), "with", PASSWORD, "and", secrets_of(path)[3]])
    shown = engine.redact(said)
    assert all(secret not in shown for secret in secrets_of(path)[:4]), shown
    assert "<the container auth file>" in shown and "<secret>" in shown
    assert str(path) not in repr(engine)
    assert containers.Engine("podman", ("podman",)).redact(said) == said  # nothing to hide without a file


def test_without_an_engine_images_and_pulls_say_why(
    settings: Settings, request: pytest.FixtureRequest
) -> None:
    settings.container_engine = "none"
    no_engine: TestClient = request.getfixturevalue("client")
    admin: Account = request.getfixturevalue("admin")
    write_app(settings.effective_apps_dir, "boxed", {"1.0": {"main": IMAGE}})
    r = no_engine.get("/api/v1/apps/boxed/images", headers=admin.headers)
    assert r.status_code == 200, r.text
    [item] = r.json()["items"]
    assert item["engine"]["kind"] is None and item["engine"]["present"] is False
    assert "container_engine = none" in item["engine"]["problem"]
    pulled = no_engine.post("/api/v1/apps/boxed/pull", headers=admin.headers)
    assert pulled.status_code == 200, pulled.text
    [result] = pulled.json()["results"]
    assert result["ok"] is False and "container_engine = none" in result["message"]


@pytest.mark.containers
@ENGINES
def test_admins_list_and_pull_images_from_the_command_line(
    kind: str, settings: Settings, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    engine = started(request, kind)
    use_engine(settings, engine)
    unreachable = unreachable_registry()
    settings.container_auth_file = auth_file(tmp_path / "private", unreachable)
    write_app(settings.effective_apps_dir, "boxed", {"1.0": {"main": IMAGE, "other": MISSING}})
    write_app(
        settings.effective_apps_dir, "remote", {"1.0": {"main": f"{unreachable}/lab/tool:1"}, "2.0": {}}
    )
    server: Server = request.getfixturevalue("server")
    server.login()

    listed = server.ok("apps", "images", "boxed")
    rows = [[cell.strip() for cell in line.split("│")[1:-1]] for line in listed.splitlines() if "│" in line]
    short = image_id(engine, IMAGE)[: len("sha256:") + 12]
    assert rows[0] == ["1.0", "main", IMAGE, engine.kind, "yes", short, "", "none live"], listed
    assert rows[1][:6] == ["1.0", "other", MISSING, engine.kind, "no", ""] and MISSING in rows[1][6], listed
    assert server.json("apps", "images", "boxed")["items"][0]["engine"]["id"] == image_id(engine, IMAGE)

    pulled = server.run("apps", "pull", "remote@1.0")
    assert pulled.returncode == 1, pulled  # a pull failed
    assert "failed" in pulled.stdout and "connection refused" in pulled.stdout, pulled.stdout
    as_json = server.run("apps", "pull", "remote@1.0", "--json")
    assert json.loads(as_json.stdout)["results"][0]["ok"] is False
    nothing = server.run("apps", "pull", "remote")  # the latest version has no container entrypoint
    assert nothing.returncode == 0 and "has no container images" in nothing.stderr, nothing
    assert server.run("apps", "pull", "remote@").returncode == 2
    assert server.run("apps", "pull", "remote@9").returncode == 1

    log = (tmp_path / "server.log").read_text()
    for secret in secrets_of(settings.container_auth_file):
        for said in (listed, pulled.stdout, pulled.stderr, as_json.stdout, log):
            assert secret not in said
