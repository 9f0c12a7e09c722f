"""The file space through the API, on both stores (local disk and SeaweedFS's S3), with two users."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import Account
from labcloud.settings import Settings


def put(client: TestClient, account: Account, path: str, data: bytes) -> dict[str, Any]:
    r = client.put(f"/api/v1/files/{path}", content=data, headers=account.headers)
    assert r.status_code == 201, r.text
    body: dict[str, Any] = r.json()
    return body


def fetch(
    client: TestClient, account: Account, path: str, headers: dict[str, str] | None = None
) -> httpx.Response:
    """GET a file the way a browser would: following S3's redirect to the presigned URL."""
    r = client.get(
        f"/api/v1/files/{path}", headers={**account.headers, **(headers or {})}, follow_redirects=False
    )
    if r.status_code == 307:
        location = r.headers["location"]
        assert "Signature" in location or "X-Amz-Signature" in location
        return httpx.get(location, headers=headers or {}, timeout=30)
    return r


def listing(client: TestClient, account: Account, prefix: str = "", **params: Any) -> dict[str, Any]:
    r = client.get("/api/v1/files", params={"prefix": prefix, **params}, headers=account.headers)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


def usage(client: TestClient, account: Account) -> dict[str, Any]:
    body: dict[str, Any] = client.get("/api/v1/me/storage", headers=account.headers).json()
    return body


def test_upload_list_download_replace_delete(storage_backend: str, client: TestClient, user: Account) -> None:
    data = os.urandom(3 * 2**20 + 17)
    out = put(client, user, "recordings/day 1/ünïcode trace.bin", data)
    assert out["size"] == len(data) and out["sha256"] == hashlib.sha256(data).hexdigest()
    assert out["path"] == "recordings/day 1/ünïcode trace.bin"
    top = listing(client, user)["items"]
    assert [(e["path"], e["type"]) for e in top] == [("recordings", "folder")]
    inner = listing(client, user, "recordings/day 1")["items"]
    assert [(e["path"], e["size"], e["sha256"]) for e in inner] == [(out["path"], len(data), out["sha256"])]

    got = fetch(client, user, "recordings/day 1/ünïcode trace.bin")
    assert got.status_code == 200 and got.content == data
    part = fetch(client, user, "recordings/day 1/ünïcode trace.bin", {"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == data[100:200]

    smaller = b"replaced"
    put(client, user, "recordings/day 1/ünïcode trace.bin", smaller)
    assert fetch(client, user, "recordings/day 1/ünïcode trace.bin").content == smaller
    assert usage(client, user)["used_bytes"] == len(smaller)

    assert client.delete("/api/v1/files/recordings", headers=user.headers).status_code == 204
    assert fetch(client, user, "recordings/day 1/ünïcode trace.bin").status_code == 404
    assert listing(client, user)["items"] == []
    assert usage(client, user)["used_bytes"] == 0


def test_objects_of_deleted_and_replaced_files_leave_the_store(
    storage_backend: str, client: TestClient, user: Account
) -> None:
    storage = client.app.state.ctx.storage  # type: ignore[attr-defined]
    put(client, user, "a.txt", b"one")
    put(client, user, "a.txt", b"two")
    put(client, user, "b/c.txt", b"three")
    keys = list(storage.iter_keys(datetime.now(UTC)))
    assert len(keys) == 2  # the replaced object is gone
    client.delete("/api/v1/files/a.txt", headers=user.headers)
    client.delete("/api/v1/files/b", headers=user.headers)
    assert list(storage.iter_keys(datetime.now(UTC))) == []


def test_etag_and_if_none_match(client: TestClient, user: Account) -> None:
    out = put(client, user, "x.csv", b"a,b\n1,2\n")
    first = client.get("/api/v1/files/x.csv", headers=user.headers)
    assert first.headers["etag"] == f'"{out["sha256"]}"'
    again = client.get(
        "/api/v1/files/x.csv", headers={**user.headers, "If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    other = client.get("/api/v1/files/x.csv", headers={**user.headers, "If-None-Match": '"nope"'})
    assert other.status_code == 200 and other.content == b"a,b\n1,2\n"
    assert "attachment" in first.headers["content-disposition"]


def test_folder_downloads_as_a_zip(storage_backend: str, client: TestClient, user: Account) -> None:
    files = {"exp/a.txt": b"alpha", "exp/sub/b.bin": os.urandom(70_000), "exp/sub/deeper/c.txt": b""}
    for path, data in files.items():
        put(client, user, path, data)
    put(client, user, "elsewhere.txt", b"not in the zip")
    r = client.get("/api/v1/files/exp", headers=user.headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/zip"
    assert 'filename="exp.zip"' in r.headers["content-disposition"]
    with zipfile.ZipFile(io.BytesIO(r.content)) as zf:
        assert zf.testzip() is None
        assert {n: zf.read(n) for n in zf.namelist()} == files


def test_listing_pages_by_name(client: TestClient, user: Account) -> None:
    names = [f"f{i:03d}.txt" for i in range(7)]
    for name in reversed(names):
        put(client, user, f"many/{name}", name.encode())
    seen: list[str] = []
    cursor = None
    while True:
        page = listing(client, user, "many", limit=3, **({"cursor": cursor} if cursor else {}))
        assert len(page["items"]) <= 3
        seen += [e["path"].rpartition("/")[2] for e in page["items"]]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == names
    bad = client.get("/api/v1/files", params={"prefix": "many", "cursor": "!!"}, headers=user.headers)
    assert bad.status_code == 422 and bad.json()["errors"][0]["loc"] == ["query", "cursor"]


def test_move_and_rename(storage_backend: str, client: TestClient, user: Account) -> None:
    put(client, user, "raw/run1/a.txt", b"A")
    put(client, user, "raw/run1/sub/b.txt", b"B")
    put(client, user, "keep.txt", b"K")

    def move(src: str, dst: str) -> httpx.Response:
        return client.post("/api/v1/files:move", json={"from": src, "to": dst}, headers=user.headers)

    r = move("raw/run1", "archive/2026/run1")
    assert r.status_code == 200 and r.json()["path"] == "archive/2026/run1" and r.json()["type"] == "folder"
    assert fetch(client, user, "archive/2026/run1/sub/b.txt").content == b"B"
    assert fetch(client, user, "raw/run1/a.txt").status_code == 404
    assert [e["path"] for e in listing(client, user, "archive/2026/run1")["items"]] == [
        "archive/2026/run1/a.txt",
        "archive/2026/run1/sub",
    ]
    assert move("keep.txt", "kept.txt").json()["path"] == "kept.txt"
    assert fetch(client, user, "kept.txt").content == b"K"

    taken = move("kept.txt", "archive/2026/run1/a.txt")
    assert taken.status_code == 409 and "already exists" in taken.json()["detail"]
    into_itself = move("archive", "archive/inner")
    assert into_itself.status_code == 422 and into_itself.json()["errors"][0]["loc"] == ["body", "to"]
    under_a_file = move("archive", "kept.txt/x")
    assert under_a_file.status_code == 422 and "is a file" in under_a_file.json()["detail"]
    assert move("nothing-here", "x").status_code == 404
    hostile = move("kept.txt", "../escape")
    assert hostile.status_code == 400 and hostile.json()["errors"][0]["loc"] == ["body", "to"]


def test_multipart_form_upload(client: TestClient, user: Account) -> None:
    data = os.urandom(200_000)
    r = client.put("/api/v1/files/forms/up.bin", files={"file": ("whatever.bin", data)}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert r.json()["sha256"] == hashlib.sha256(data).hexdigest()
    assert client.get("/api/v1/files/forms/up.bin", headers=user.headers).content == data
    empty = client.put(
        "/api/v1/files/forms/none.bin", files={"note": (None, "no file")}, headers=user.headers
    )
    assert empty.status_code == 422 and empty.json()["errors"][0]["loc"] == ["body", "file"]


def test_a_file_and_a_folder_cannot_share_a_path(client: TestClient, user: Account) -> None:
    put(client, user, "data/a.txt", b"x")
    over_folder = client.put("/api/v1/files/data", content=b"y", headers=user.headers)
    assert over_folder.status_code == 422 and "is a folder" in over_folder.json()["detail"]
    inside_file = client.put("/api/v1/files/data/a.txt/b.txt", content=b"y", headers=user.headers)
    assert inside_file.status_code == 422 and "is a file" in inside_file.json()["detail"]


HOSTILE = [
    "%2e%2e/x",
    "a/%2e%2e/%2e%2e/x",
    "..%2fx",
    "a%2f..%2f..%2fx",
    "%2fetc%2fpasswd",
    "x%00y",
    "a%5c..%5cx",
    "line%0abreak",
    "tab%09name",
    "del%7f",
]


@pytest.mark.parametrize("raw", HOSTILE)
def test_hostile_paths_are_refused_on_every_endpoint(client: TestClient, user: Account, raw: str) -> None:
    calls = [
        client.put(f"/api/v1/files/{raw}", content=b"x", headers=user.headers),
        client.get(f"/api/v1/files/{raw}", headers=user.headers),
        client.delete(f"/api/v1/files/{raw}", headers=user.headers),
        client.get(f"/api/v1/files?prefix={raw}", headers=user.headers),
    ]
    for r in calls:
        assert r.status_code == 400, (r.request.method, r.request.url, r.text)
        assert r.json()["type"].endswith("invalid-path") and r.json()["errors"][0]["loc"][-1] in (
            "path",
            "prefix",
        )
    assert listing(client, user)["items"] == []


def _raw_asgi(app: Any, method: str, raw_path: bytes, headers: dict[str, str]) -> int:
    """Send a path exactly as given, as a server would pass it on (httpx would normalise '..' away)."""
    scope = {
        "type": "http",
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "server": ("127.0.0.1", 80),
        "client": ("127.0.0.1", 5000),
        "root_path": "",
        "path": raw_path.decode(),
        "raw_path": raw_path,
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
    }
    status: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"x", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            status.append(message["status"])

    asyncio.run(app(scope, receive, send))
    return status[0]


@pytest.mark.parametrize("raw", [b"/api/v1/files/../x", b"/api/v1/files/a/../../x", b"/api/v1/files/./../x"])
def test_raw_dot_dot_segments_are_refused(client: TestClient, user: Account, raw: bytes) -> None:
    for method in ("PUT", "GET", "DELETE"):
        assert _raw_asgi(client.app, method, raw, {**user.headers, "content-length": "1"}) in (400, 404)
    assert listing(client, user)["items"] == []


def test_another_users_files_are_404(storage_backend: str, client: TestClient, make_user: Any) -> None:
    alice, bob = make_user(), make_user()
    put(client, alice, "private/notes.txt", b"alice's")
    assert fetch(client, bob, "private/notes.txt").status_code == 404
    assert client.get("/api/v1/files/private", headers=bob.headers).status_code == 404
    assert client.delete("/api/v1/files/private", headers=bob.headers).status_code == 404
    moved = client.post("/api/v1/files:move", json={"from": "private", "to": "mine"}, headers=bob.headers)
    assert moved.status_code == 404
    assert client.get("/api/v1/files", params={"prefix": "private"}, headers=bob.headers).status_code == 404
    assert listing(client, bob)["items"] == []
    put(client, bob, "private/notes.txt", b"bob's")  # same path, separate spaces
    assert fetch(client, alice, "private/notes.txt").content == b"alice's"
    assert fetch(client, bob, "private/notes.txt").content == b"bob's"


def test_storage_limit_refuses_up_front_and_mid_stream(
    client: TestClient, settings: Settings, admin: Account, user: Account
) -> None:
    r = client.patch(f"/api/v1/users/{user.id}", json={"storage_limit_bytes": 10_000}, headers=admin.headers)
    assert r.status_code == 200 and r.json()["storage_limit_bytes"] == 10_000
    put(client, user, "a.bin", b"x" * 6000)
    assert usage(client, user) == {"used_bytes": 6000, "limit_bytes": 10_000, "available_bytes": 4000}

    up_front = client.put("/api/v1/files/b.bin", content=b"y" * 5000, headers=user.headers)
    assert up_front.status_code == 413 and "4000 bytes are left" in up_front.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: only the stream shows it is too big
        for _ in range(10):
            yield b"z" * 1000

    mid_stream = client.put("/api/v1/files/c.bin", content=chunks(), headers=user.headers)
    assert mid_stream.status_code == 413
    assert fetch(client, user, "c.bin").status_code == 404
    assert list((settings.uploads_dir / "put").iterdir()) == []  # nothing half-written is left behind
    assert put(client, user, "a.bin", b"w" * 9000)["size"] == 9000  # replacing frees the old size
    assert usage(client, user)["used_bytes"] == 9000

    reset = client.patch(
        f"/api/v1/users/{user.id}", json={"storage_limit_bytes": None}, headers=admin.headers
    )
    assert reset.json()["storage_limit_bytes"] is None
    put(client, user, "b.bin", b"y" * 5000)  # the default (no limit) applies again


def test_largest_upload_setting(client: TestClient, settings: Settings, user: Account) -> None:
    settings.max_upload_bytes = 1000
    r = client.put("/api/v1/files/big.bin", content=b"x" * 5000, headers=user.headers)
    assert r.status_code == 413 and "1000" in r.json()["detail"]
    assert fetch(client, user, "big.bin").status_code == 404


def test_a_broken_upload_leaves_nothing(client: TestClient, settings: Settings, user: Account) -> None:
    def broken() -> Iterator[bytes]:
        yield b"a" * 1000
        raise ConnectionResetError("client went away")

    with pytest.raises(ConnectionResetError):
        client.put("/api/v1/files/half.bin", content=broken(), headers=user.headers)
    assert fetch(client, user, "half.bin").status_code == 404
    assert list((settings.uploads_dir / "put").iterdir()) == []
    assert usage(client, user)["used_bytes"] == 0


def test_direct_uploads_need_s3(client: TestClient, user: Account) -> None:
    r = client.post("/api/v1/direct-uploads", json={"path": "x.bin", "size": 10}, headers=user.headers)
    assert r.status_code == 409 and "/api/v1/uploads" in r.json()["detail"]


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
def test_direct_upload_through_presigned_part_urls(
    storage_backend: str, client: TestClient, user: Account
) -> None:
    data = os.urandom(11 * 2**20 + 5)
    start = client.post(
        "/api/v1/direct-uploads",
        json={
            "path": "big/raw.bin",
            "size": len(data),
            "sha256": hashlib.sha256(data).hexdigest(),
            "part_size": 5 * 2**20,
        },
        headers=user.headers,
    )
    assert start.status_code == 201, start.text
    plan = start.json()
    assert [p["part_number"] for p in plan["parts"]] == [1, 2, 3]
    assert listing(client, user)["items"] == []  # nothing visible before completion
    etags = []
    for part in plan["parts"]:
        n = part["part_number"]
        chunk = data[(n - 1) * plan["part_size"] : n * plan["part_size"]]
        r = httpx.put(part["url"], content=chunk, timeout=60)
        assert r.status_code == 200, r.text
        etags.append({"part_number": n, "etag": r.headers["etag"]})
    missing = client.post(
        f"/api/v1/direct-uploads/{plan['id']}/complete", json={"parts": etags[:2]}, headers=user.headers
    )
    assert missing.status_code == 422 and missing.json()["errors"][0]["loc"] == ["body", "parts"]
    done = client.post(
        f"/api/v1/direct-uploads/{plan['id']}/complete", json={"parts": etags}, headers=user.headers
    )
    assert done.status_code == 200, done.text
    assert done.json()["sha256"] == hashlib.sha256(data).hexdigest() and done.json()["size"] == len(data)
    assert fetch(client, user, "big/raw.bin").content == data
    assert usage(client, user)["used_bytes"] == len(data)


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
def test_direct_upload_with_a_wrong_checksum_is_refused(
    storage_backend: str, client: TestClient, user: Account
) -> None:
    data = b"q" * 1000
    plan = client.post(
        "/api/v1/direct-uploads",
        json={"path": "bad.bin", "size": len(data), "sha256": "0" * 64},
        headers=user.headers,
    ).json()
    r = httpx.put(plan["parts"][0]["url"], content=data, timeout=60)
    done = client.post(
        f"/api/v1/direct-uploads/{plan['id']}/complete",
        json={"parts": [{"part_number": 1, "etag": r.headers["etag"]}]},
        headers=user.headers,
    )
    assert done.status_code == 422 and done.json()["errors"][0]["loc"] == ["body", "sha256"]
    assert fetch(client, user, "bad.bin").status_code == 404
    storage = client.app.state.ctx.storage  # type: ignore[attr-defined]
    assert list(storage.iter_keys(datetime.now(UTC))) == []


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
def test_another_users_direct_upload_is_404(storage_backend: str, client: TestClient, make_user: Any) -> None:
    alice, bob = make_user(), make_user()
    plan = client.post(
        "/api/v1/direct-uploads", json={"path": "a.bin", "size": 3}, headers=alice.headers
    ).json()
    etag = httpx.put(plan["parts"][0]["url"], content=b"abc", timeout=30).headers["etag"]
    body = {"parts": [{"part_number": 1, "etag": etag}]}
    assert (
        client.post(
            f"/api/v1/direct-uploads/{plan['id']}/complete", json=body, headers=bob.headers
        ).status_code
        == 404
    )
    assert client.delete(f"/api/v1/direct-uploads/{plan['id']}", headers=bob.headers).status_code == 404
    hostile = client.post("/api/v1/direct-uploads", json={"path": "../a.bin", "size": 3}, headers=bob.headers)
    assert hostile.status_code == 400 and hostile.json()["errors"][0]["loc"] == ["body", "path"]
    done = client.post(f"/api/v1/direct-uploads/{plan['id']}/complete", json=body, headers=alice.headers)
    assert done.status_code == 200 and fetch(client, alice, "a.bin").content == b"abc"
    assert fetch(client, bob, "a.bin").status_code == 404


def test_a_job_cannot_take_another_users_file_as_input(client: TestClient, make_user: Any) -> None:
    alice, bob = make_user(), make_user()
    put(client, alice, "trace.csv", b"1\n2\n")
    r = client.post(
        "/api/v1/jobs", json={"app": "spikes", "inputs": {"trace": "trace.csv"}}, headers=bob.headers
    )
    assert r.status_code == 422 and r.json()["errors"][0]["loc"] == ["body", "inputs", "trace"]


def test_an_empty_folder_is_made_with_the_folders_above_it_and_a_taken_name_is_refused(
    client: TestClient, user: Account, make_user: Any
) -> None:
    r = client.post("/api/v1/files:mkdir", json={"path": "raw/2026/dec"}, headers=user.headers)
    assert r.status_code == 201, r.text
    assert r.json()["path"] == "raw/2026/dec" and r.json()["type"] == "folder"
    listed = client.get("/api/v1/files?prefix=raw/2026", headers=user.headers).json()["items"]
    assert [(e["path"], e["type"]) for e in listed] == [("raw/2026/dec", "folder")]
    again = client.post("/api/v1/files:mkdir", json={"path": "raw/2026/dec"}, headers=user.headers)
    assert again.status_code == 409 and "already exists as a folder" in again.text
    assert client.put("/api/v1/files/notes.txt", content=b"x", headers=user.headers).status_code == 201
    inside_file = client.post("/api/v1/files:mkdir", json={"path": "notes.txt/sub"}, headers=user.headers)
    assert inside_file.status_code == 422 and "is a file" in inside_file.text
    escape = client.post("/api/v1/files:mkdir", json={"path": "../up"}, headers=user.headers)
    assert escape.status_code in (400, 422)
    # a file can go into the new folder; another user sees nothing of it
    assert (
        client.put("/api/v1/files/raw/2026/dec/a.csv", content=b"1", headers=user.headers).status_code == 201
    )
    other: Account = make_user()
    assert client.get("/api/v1/files?prefix=raw", headers=other.headers).status_code == 404
