"""Resumable uploads (tus 1.0.0) at /api/v1/uploads: the protocol and its extensions, resuming, checksums,
expiry, isolation between users, admission checks, and the real ``tuspy`` client against a live server."""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from conftest import Account
from labcloud.services import partial_files, uploads
from labcloud.settings import Settings
from live_server import Server, login_headers

TUS = {"Tus-Resumable": "1.0.0"}
CHUNK_TYPE = {"Content-Type": "application/offset+octet-stream"}
PROBLEM = "application/problem+json"


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def meta(**pairs: str) -> str:
    return ",".join(f"{k} {b64(v)}" for k, v in pairs.items())


def payload(size: int, seed: int = 1) -> bytes:
    """Bytes that differ at every position, so a misplaced chunk cannot go unnoticed."""
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def create(client: TestClient, who: Account, path: str, length: int, **headers: str) -> httpx.Response:
    r = client.post(
        "/api/v1/uploads",
        headers={
            **who.headers,
            **TUS,
            "Upload-Length": str(length),
            "Upload-Metadata": meta(path=path),
            **headers,
        },
    )
    return r


def started(client: TestClient, who: Account, path: str, length: int) -> str:
    """Create an upload; its URL path (``/api/v1/uploads/<id>``)."""
    r = create(client, who, path, length)
    assert r.status_code == 201, r.text
    return urlsplit(r.headers["Location"]).path


def patch(
    client: TestClient, who: Account, url: str, offset: int, data: Any, **headers: str
) -> httpx.Response:
    return client.patch(
        url,
        content=data,
        headers={**who.headers, **TUS, **CHUNK_TYPE, "Upload-Offset": str(offset), **headers},
    )


def head(client: TestClient, who: Account, url: str) -> httpx.Response:
    return client.head(url, headers={**who.headers, **TUS})


def problem(r: httpx.Response, status: int) -> dict[str, Any]:
    """The problem+json body of an error answer, which like every tus answer names the protocol version."""
    assert r.status_code == status, r.text
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert r.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = r.json()
    assert body["status"] == status and body["detail"]
    return body


def partial_file(settings: Settings, url: str) -> Path:
    return partial_files.partial_path(settings, uuid.UUID(url.rsplit("/", 1)[1]))


def download(client: TestClient, who: Account, path: str) -> bytes:
    """A file's bytes: from the server, or (S3 storage) from the presigned URL it redirects to."""
    r = client.get(f"/api/v1/files/{path}", headers=who.headers, follow_redirects=False)
    if r.status_code == 307:
        r = httpx.get(r.headers["Location"])
    assert r.status_code == 200, r.text
    return r.content


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# ------------------------------------------------------------------------------------------ discovery


def test_options_advertise_version_extensions_size_and_checksums(
    client: TestClient, settings: Settings
) -> None:
    r = client.options("/api/v1/uploads")  # discovery needs no login
    assert r.status_code == 204
    assert r.headers["Tus-Version"] == "1.0.0"
    assert r.headers["Tus-Resumable"] == "1.0.0"
    assert set(r.headers["Tus-Extension"].split(",")) == {
        "creation",
        "creation-with-upload",
        "termination",
        "checksum",
        "expiration",
    }
    assert int(r.headers["Tus-Max-Size"]) == settings.max_upload_bytes
    assert set(r.headers["Tus-Checksum-Algorithm"].split(",")) == {"sha1", "md5", "sha256"}


def test_unsupported_or_missing_version_is_412_with_tus_version(client: TestClient, user: Account) -> None:
    for version in ({"Tus-Resumable": "0.2.2"}, {}):
        r = client.post(
            "/api/v1/uploads",
            headers={**user.headers, **version, "Upload-Length": "3", "Upload-Metadata": meta(path="a")},
        )
        body = problem(r, 412)
        assert r.headers["Tus-Version"] == "1.0.0"
        assert "1.0.0" in body["detail"]
    url = started(client, user, "a.bin", 3)
    r = client.head(url, headers={**user.headers, "Tus-Resumable": "2.0.0"})
    assert r.status_code == 412 and r.headers["Tus-Version"] == "1.0.0"
    r = patch(client, user, url, 0, b"abc", **{"Tus-Resumable": "2.0.0"})
    problem(r, 412)
    assert head(client, user, url).headers["Upload-Offset"] == "0"


def test_login_is_required_and_the_answer_still_speaks_tus(client: TestClient) -> None:
    r = client.post(
        "/api/v1/uploads", headers={**TUS, "Upload-Length": "3", "Upload-Metadata": meta(path="a")}
    )
    problem(r, 401)
    assert r.headers["WWW-Authenticate"] == "Bearer"


# ------------------------------------------------------------------------------------------ core + creation


def test_create_head_patch_in_chunks_then_the_file_is_published(
    storage_backend: str, client: TestClient, user: Account, settings: Settings
) -> None:
    data = payload(300_000)
    r = create(
        client,
        user,
        "runs/day1/trace.bin",
        len(data),
        **{"Upload-Metadata": meta(path="runs/day1/trace.bin", note="é")},
    )
    assert r.status_code == 201, r.text
    assert r.headers["Tus-Resumable"] == "1.0.0"
    location = r.headers["Location"]
    assert location.startswith("http://testserver/api/v1/uploads/")  # absolute
    assert r.headers["Upload-Offset"] == "0"
    expires = parsedate_to_datetime(r.headers["Upload-Expires"])  # RFC 7231
    assert r.headers["Upload-Expires"].endswith(" GMT")
    assert abs(expires - (datetime.now(UTC) + timedelta(hours=settings.upload_expiry_hours))) < timedelta(
        minutes=1
    )
    url = urlsplit(location).path
    assert partial_file(settings, url).is_file()

    h = head(client, user, url)
    assert h.status_code == 200
    assert h.headers["Upload-Offset"] == "0"
    assert h.headers["Upload-Length"] == str(len(data))
    assert h.headers["Cache-Control"] == "no-store"
    assert h.headers["Tus-Resumable"] == "1.0.0"
    assert dict(p.split(" ") for p in h.headers["Upload-Metadata"].split(",")) == {
        "path": b64("runs/day1/trace.bin"),
        "note": b64("é"),
    }

    offset = 0
    for size in (100_000, 1, 99_999):
        r = patch(client, user, url, offset, data[offset : offset + size])
        assert r.status_code == 204, r.text
        offset += size
        assert r.headers["Upload-Offset"] == str(offset)
        assert r.headers["Tus-Resumable"] == "1.0.0"
        assert "Upload-Expires" in r.headers
        assert "Labcloud-File-Sha256" not in r.headers
        assert head(client, user, url).headers["Upload-Offset"] == str(offset)

    # the wrong offset, the wrong content type: refused, nothing changes
    wrong = patch(client, user, url, 0, data[:10])
    body = problem(wrong, 409)
    assert f"the upload is at {offset}" in body["detail"]
    assert body["type"].endswith("/upload-offset-mismatch") and wrong.headers["Upload-Offset"] == str(offset)
    r = client.patch(
        url,
        content=data[offset:],
        headers={
            **user.headers,
            **TUS,
            "Content-Type": "application/octet-stream",
            "Upload-Offset": str(offset),
        },
    )
    body = problem(r, 415)
    assert "application/offset+octet-stream" in body["detail"]
    body = problem(patch(client, user, url, offset, data[offset:], **{"Upload-Offset": "-1"}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-offset"]
    assert head(client, user, url).headers["Upload-Offset"] == str(offset)

    r = patch(client, user, url, offset, data[offset:])
    assert r.status_code == 204, r.text
    assert r.headers["Upload-Offset"] == str(len(data))
    assert r.headers["Labcloud-File-Sha256"] == sha256(data)
    assert r.headers["Labcloud-File-Path"] == "runs/day1/trace.bin"
    assert r.headers["Labcloud-File-Size"] == str(len(data))
    assert "Upload-Expires" not in r.headers

    # the upload is over: its URL is gone with its partial file, the file is in the space
    problem(patch(client, user, url, len(data), b""), 404)
    assert head(client, user, url).status_code == 404
    assert not partial_file(settings, url).exists()
    assert download(client, user, "runs/day1/trace.bin") == data
    listed = client.get("/api/v1/files", params={"prefix": "runs/day1"}, headers=user.headers).json()["items"]
    assert [(f["path"], f["size"], f["sha256"]) for f in listed] == [
        ("runs/day1/trace.bin", len(data), sha256(data))
    ]


def test_creation_with_upload_and_empty_files(client: TestClient, user: Account) -> None:
    data = payload(5000, seed=2)
    r = client.post(
        "/api/v1/uploads",
        content=data[:2000],
        headers={
            **user.headers,
            **TUS,
            **CHUNK_TYPE,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(path="c.bin"),
        },
    )
    assert r.status_code == 201, r.text
    assert r.headers["Upload-Offset"] == "2000"
    url = urlsplit(r.headers["Location"]).path
    assert patch(client, user, url, 2000, data[2000:]).status_code == 204
    assert download(client, user, "c.bin") == data

    whole = client.post(
        "/api/v1/uploads",
        content=data,
        headers={
            **user.headers,
            **TUS,
            **CHUNK_TYPE,
            "Upload-Length": str(len(data)),
            "Upload-Metadata": meta(path="d.bin"),
        },
    )
    assert whole.status_code == 201, whole.text
    assert whole.headers["Labcloud-File-Sha256"] == sha256(data)
    assert download(client, user, "d.bin") == data

    empty = create(client, user, "empty.txt", 0)
    assert empty.status_code == 201, empty.text
    assert empty.headers["Labcloud-File-Sha256"] == sha256(b"")
    assert download(client, user, "empty.txt") == b""


def test_an_upload_this_process_did_not_follow_is_hashed_whole_at_the_end(
    client: TestClient, user: Account
) -> None:
    """Another replica took the first chunk, or the server restarted since: the partial file is hashed
    once, when it is complete."""
    data = payload(300_000, seed=7)
    url = started(client, user, "elsewhere.bin", len(data))
    assert patch(client, user, url, 0, data[:100_000]).status_code == 204
    partial_files.hashers.forget(uuid.UUID(url.rsplit("/", 1)[1]))
    r = patch(client, user, url, 100_000, data[100_000:])
    assert r.status_code == 204 and r.headers["Labcloud-File-Sha256"] == sha256(data)
    assert download(client, user, "elsewhere.bin") == data


def test_filename_names_the_destination_when_there_is_no_path(client: TestClient, user: Account) -> None:
    r = client.post(
        "/api/v1/uploads",
        headers={**user.headers, **TUS, "Upload-Length": "2", "Upload-Metadata": meta(filename="notes.txt")},
    )
    assert r.status_code == 201, r.text
    assert patch(client, user, urlsplit(r.headers["Location"]).path, 0, b"hi").status_code == 204
    assert download(client, user, "notes.txt") == b"hi"


def test_bad_creation_headers_are_400_naming_the_header(
    client: TestClient, user: Account, settings: Settings
) -> None:
    def post(**headers: str) -> httpx.Response:
        return client.post("/api/v1/uploads", headers={**user.headers, **TUS, **headers})

    body = problem(post(**{"Upload-Metadata": meta(path="a")}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-length"]
    body = problem(post(**{"Upload-Defer-Length": "1", "Upload-Metadata": meta(path="a")}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-defer-length"]
    body = problem(post(**{"Upload-Length": "ten", "Upload-Metadata": meta(path="a")}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-length"]
    body = problem(post(**{"Upload-Length": "3"}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-metadata"]
    assert "path" in body["detail"]
    body = problem(post(**{"Upload-Length": "3", "Upload-Metadata": "path not*base64"}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-metadata", "path"]
    body = problem(post(**{"Upload-Length": "3", "Upload-Metadata": f"path {b64('a')},path {b64('b')}"}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-metadata", "path"]
    tus_dir = settings.uploads_dir / "tus"
    assert not tus_dir.exists() or not any(tus_dir.iterdir())  # nothing was started


@pytest.mark.parametrize(
    "hostile",
    ["../escape.txt", "a/../../b.txt", "/etc/passwd", "a\\..\\b", "ctl\x01.txt", "..", "", "x" * 300],
)
def test_hostile_destination_paths_are_refused_up_front(
    client: TestClient, user: Account, settings: Settings, hostile: str
) -> None:
    body = problem(create(client, user, hostile, 10), 400)
    assert body["type"].endswith("/bad-upload-request")
    assert body["errors"][0]["loc"] == ["header", "upload-metadata", "path"]
    assert body["errors"][0]["msg"]
    tus_dir = settings.uploads_dir / "tus"
    assert not tus_dir.exists() or not any(tus_dir.iterdir())


def test_destination_that_is_a_folder_or_inside_a_file_is_refused(client: TestClient, user: Account) -> None:
    url = started(client, user, "data/a.txt", 1)
    assert patch(client, user, url, 0, b"a").status_code == 204
    body = problem(create(client, user, "data", 1), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-metadata", "path"]
    assert "folder" in body["detail"]
    body = problem(create(client, user, "data/a.txt/b.txt", 1), 400)
    assert "is a file" in body["detail"]
    # the destination became a folder while the bytes came: refused at completion, the upload is dropped
    late = started(client, user, "later/b.txt", 1)
    assert (
        client.put("/api/v1/files/later/b.txt/c.txt", content=b"c", headers=user.headers).status_code == 201
    )
    body = problem(patch(client, user, late, 0, b"b"), 400)
    assert body["type"].endswith("/bad-upload-request") and "folder" in body["detail"]
    assert head(client, user, late).status_code == 404


def test_too_large_or_over_quota_is_413_up_front(
    client: TestClient, user: Account, settings: Settings
) -> None:
    settings.max_upload_bytes = 1000
    body = problem(create(client, user, "big.bin", 1001), 413)
    assert "1001" in body["detail"]
    assert client.options("/api/v1/uploads").headers["Tus-Max-Size"] == "1000"

    settings.storage_quota_bytes = 500
    url = started(client, user, "first.bin", 300)
    assert patch(client, user, url, 0, payload(300)).status_code == 204
    body = problem(create(client, user, "second.bin", 300), 413)
    assert "200 bytes are left" in body["detail"]
    assert started(client, user, "first.bin", 500)  # replacing the file frees its room
    tus_dir = settings.uploads_dir / "tus"
    assert len(list(tus_dir.iterdir())) == 1  # only the accepted one


def test_a_chunk_may_not_pass_the_upload_length(client: TestClient, user: Account) -> None:
    url = started(client, user, "len.bin", 10)
    assert patch(client, user, url, 0, b"12345").status_code == 204
    body = problem(patch(client, user, url, 5, b"123456"), 413)  # Content-Length says so up front
    assert "Upload-Length" in body["detail"]

    def streamed() -> Iterator[bytes]:  # no Content-Length: stopped once it passes
        yield b"123"
        yield b"4567"

    body = problem(patch(client, user, url, 5, streamed()), 413)
    assert "Upload-Length" in body["detail"]
    assert head(client, user, url).headers["Upload-Offset"] == "5"
    r = patch(client, user, url, 5, b"67890")
    assert r.status_code == 204 and r.headers["Labcloud-File-Sha256"] == sha256(b"1234567890")


# ------------------------------------------------------------------------------------------ resuming


def test_resume_after_a_partial_send(client: TestClient, user: Account) -> None:
    data = payload(2_000_000, seed=3)
    url = started(client, user, "resume.bin", len(data))
    assert patch(client, user, url, 0, data[:700_000]).status_code == 204
    # the client "crashed"; it asks where to continue and sends the rest
    offset = int(head(client, user, url).headers["Upload-Offset"])
    assert offset == 700_000
    r = patch(client, user, url, offset, data[offset:])
    assert r.status_code == 204, r.text
    assert r.headers["Labcloud-File-Sha256"] == sha256(data)
    assert download(client, user, "resume.bin") == data


def test_bytes_beyond_the_recorded_offset_are_not_trusted(
    client: TestClient, user: Account, settings: Settings
) -> None:
    """A server killed mid-PATCH leaves bytes it never acknowledged (the partial file is longer than the
    recorded offset); a disk that lost bytes leaves it shorter. Resuming is correct either way."""
    data = payload(400_000, seed=4)
    url = started(client, user, "crash.bin", len(data))
    assert patch(client, user, url, 0, data[:100_000]).status_code == 204
    part = partial_file(settings, url)
    with open(part, "ab") as fh:
        fh.write(b"\xff" * 50_000)  # written, never acknowledged
    assert head(client, user, url).headers["Upload-Offset"] == "100000"
    problem(patch(client, user, url, 150_000, data[150_000:]), 409)
    assert patch(client, user, url, 100_000, data[100_000:200_000]).status_code == 204
    assert part.stat().st_size == 200_000

    os.truncate(part, 180_000)  # recorded 200 000, but only 180 000 are there
    assert head(client, user, url).headers["Upload-Offset"] == "180000"
    r = patch(client, user, url, 180_000, data[180_000:])
    assert r.status_code == 204, r.text
    assert r.headers["Labcloud-File-Sha256"] == sha256(data)  # re-hashed: the running hash was out of step
    assert download(client, user, "crash.bin") == data


def test_one_writer_at_a_time(client: TestClient, user: Account, settings: Settings) -> None:
    """Another request holding the upload's lock (a PATCH in flight) makes PATCH and DELETE 409."""
    url = started(client, user, "busy.bin", 10)
    with open(partial_file(settings, url), "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        body = problem(patch(client, user, url, 0, b"0123456789"), 409)
        assert "Another request is writing" in body["detail"]
        problem(client.delete(url, headers={**user.headers, **TUS}), 409)
        assert head(client, user, url).headers["Upload-Offset"] == "0"  # HEAD still answers
    assert patch(client, user, url, 0, b"0123456789").status_code == 204


# ------------------------------------------------------------------------------------------ checksum


def test_checksums_per_chunk(client: TestClient, user: Account) -> None:
    data = payload(30_000, seed=5)
    url = started(client, user, "sums.bin", len(data))

    def digest(name: str, chunk: bytes) -> str:
        return f"{name} {base64.b64encode(hashlib.new(name, chunk).digest()).decode()}"

    assert (
        patch(
            client, user, url, 0, data[:10_000], **{"Upload-Checksum": digest("sha1", data[:10_000])}
        ).status_code
        == 204
    )
    wrong = digest("md5", data[10_000:20_001])
    r = patch(client, user, url, 10_000, data[10_000:20_000], **{"Upload-Checksum": wrong})
    body = problem(r, 460)
    assert body["title"] == "Checksum mismatch"
    assert "offset stays 10000" in body["detail"]
    assert head(client, user, url).headers["Upload-Offset"] == "10000"  # the chunk was discarded

    body = problem(
        patch(client, user, url, 10_000, data[10_000:], **{"Upload-Checksum": "crc32 AAAAAA=="}), 400
    )
    assert body["errors"][0]["loc"] == ["header", "upload-checksum"]
    assert "sha1" in body["detail"]
    body = problem(patch(client, user, url, 10_000, data[10_000:], **{"Upload-Checksum": "sha1 !!"}), 400)
    assert body["errors"][0]["loc"] == ["header", "upload-checksum"]

    assert (
        patch(
            client,
            user,
            url,
            10_000,
            data[10_000:20_000],
            **{"Upload-Checksum": digest("md5", data[10_000:20_000])},
        ).status_code
        == 204
    )
    r = patch(
        client, user, url, 20_000, data[20_000:], **{"Upload-Checksum": digest("sha256", data[20_000:])}
    )
    assert r.status_code == 204, r.text
    assert r.headers["Labcloud-File-Sha256"] == sha256(data)
    assert download(client, user, "sums.bin") == data


# ------------------------------------------------------------------------------ termination, expiry


def test_termination_removes_the_upload(client: TestClient, user: Account, settings: Settings) -> None:
    url = started(client, user, "gone.bin", 100)
    assert patch(client, user, url, 0, payload(40)).status_code == 204
    r = client.delete(url, headers={**user.headers, **TUS})
    assert r.status_code == 204 and r.headers["Tus-Resumable"] == "1.0.0"
    assert not partial_file(settings, url).exists()
    assert head(client, user, url).status_code == 404
    problem(patch(client, user, url, 40, payload(60)), 404)
    problem(client.delete(url, headers={**user.headers, **TUS}), 404)
    assert client.get("/api/v1/files", headers=user.headers).json()["items"] == []


def test_expired_uploads_are_refused_then_removed(
    client: TestClient, user: Account, settings: Settings, app: Any
) -> None:
    ctx = app.state.ctx
    keep = started(client, user, "keep.bin", 10)
    r = create(client, user, "old.bin", 10)
    expires = parsedate_to_datetime(r.headers["Upload-Expires"])
    old = urlsplit(r.headers["Location"]).path
    assert uploads.expire(ctx.db, settings, datetime.now(UTC)) == 0  # nothing has expired yet
    assert head(client, user, old).status_code == 200

    settings.upload_expiry_hours = 1e-9  # uploads from now on expire at once
    brief = started(client, user, "brief.bin", 10)
    assert head(client, user, brief).status_code == 410
    body = problem(patch(client, user, brief, 0, b"0123456789"), 410)
    assert "expired" in body["detail"]
    brief_part = partial_file(settings, brief)
    assert brief_part.exists()

    assert uploads.expire(ctx.db, settings, datetime.now(UTC)) == 1
    assert not brief_part.exists()
    assert head(client, user, brief).status_code == 404
    assert head(client, user, keep).status_code == 200

    # later, the others' time is up too
    assert uploads.expire(ctx.db, settings, expires + timedelta(seconds=1)) == 2
    assert head(client, user, old).status_code == 404
    assert not any((settings.uploads_dir / "tus").iterdir())


def test_a_patch_pushes_the_expiry_back(client: TestClient, user: Account, settings: Settings) -> None:
    r = create(client, user, "slow.bin", 10)
    first = parsedate_to_datetime(r.headers["Upload-Expires"])
    url = urlsplit(r.headers["Location"]).path
    settings.upload_expiry_hours = 48
    later = patch(client, user, url, 0, b"01234")
    assert parsedate_to_datetime(later.headers["Upload-Expires"]) - first > timedelta(hours=23)
    assert head(client, user, url).headers["Upload-Expires"] == later.headers["Upload-Expires"]


def test_orphaned_partial_files_are_swept(client: TestClient, settings: Settings, app: Any) -> None:
    folder = settings.uploads_dir / "tus"
    folder.mkdir(parents=True, exist_ok=True)
    orphan = folder / uuid.uuid4().hex
    orphan.write_bytes(b"left by a crash")
    assert uploads.expire(app.state.ctx.db, settings, datetime.now(UTC)) == 0
    assert orphan.exists()  # too young
    later = datetime.now(UTC) + timedelta(hours=settings.upload_expiry_hours + 1)
    assert uploads.expire(app.state.ctx.db, settings, later) == 0
    assert not orphan.exists()


# ------------------------------------------------------------------------------------------ users


def test_another_users_upload_is_404(client: TestClient, make_user: Callable[..., Account]) -> None:
    alice, bob = make_user(), make_user()
    url = started(client, alice, "private.bin", 6)
    assert patch(client, alice, url, 0, b"abc").status_code == 204
    assert head(client, bob, url).status_code == 404
    problem(patch(client, bob, url, 3, b"def"), 404)
    problem(client.delete(url, headers={**bob.headers, **TUS}), 404)
    problem(patch(client, bob, "/api/v1/uploads/not-an-id", 0, b"x"), 404)
    assert head(client, alice, url).headers["Upload-Offset"] == "3"
    assert patch(client, alice, url, 3, b"def").status_code == 204
    assert download(client, alice, "private.bin") == b"abcdef"
    assert client.get("/api/v1/files/private.bin", headers=bob.headers).status_code == 404


def test_method_override_for_proxies_that_only_pass_post(client: TestClient, user: Account) -> None:
    url = started(client, user, "o.bin", 4)
    r = client.post(
        url,
        content=b"ab",
        headers={
            **user.headers,
            **TUS,
            **CHUNK_TYPE,
            "Upload-Offset": "0",
            "X-HTTP-Method-Override": "PATCH",
        },
    )
    assert r.status_code == 204 and r.headers["Upload-Offset"] == "2"
    r = client.post(url, headers={**user.headers, **TUS, "X-HTTP-Method-Override": "HEAD"})
    assert r.status_code == 200 and r.headers["Upload-Offset"] == "2"
    r = client.post(url, headers={**user.headers, **TUS, "X-HTTP-Method-Override": "DELETE"})
    assert r.status_code == 204
    assert head(client, user, url).status_code == 404


# ------------------------------------------------------------------------------------------ a live server


def _until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll ``condition`` (the server works on its own schedule); fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_tuspy_uploads_a_file_in_small_chunks(
    storage_backend: str,
    server: Server,
    tmp_path: Path,
) -> None:
    from tusclient import client as tus

    auth = login_headers(server.url)
    data = os.urandom(3 * 2**20 + 12345)
    local = tmp_path / "recording.bin"
    local.write_bytes(data)
    uploader = tus.TusClient(f"{server.url}/api/v1/uploads", headers=auth).uploader(
        str(local), chunk_size=256 * 1024, metadata={"path": "tuspy/recording.bin"}, upload_checksum=True
    )
    uploader.upload()
    assert uploader.offset == len(data)
    r = httpx.get(f"{server.url}/api/v1/files/tuspy/recording.bin", headers=auth, follow_redirects=True)
    assert r.status_code == 200
    assert r.content == data
    listed = httpx.get(f"{server.url}/api/v1/files", params={"prefix": "tuspy"}, headers=auth).json()["items"]
    assert listed[0]["sha256"] == sha256(data)


def test_a_dropped_connection_keeps_what_arrived(server: Server, settings: Settings) -> None:
    """A PATCH whose connection dies keeps the bytes the server received; while it runs, a second PATCH is
    refused (409); then the client resumes from the offset HEAD gives and the file is whole."""
    auth = login_headers(server.url)
    data = payload(6 * 2**20, seed=7)
    with httpx.Client(base_url=server.url, headers={**auth, **TUS}) as http:
        r = http.post(
            "/api/v1/uploads",
            headers={"Upload-Length": str(len(data)), "Upload-Metadata": meta(path="drop.bin")},
        )
        assert r.status_code == 201, r.text
        url = urlsplit(r.headers["Location"]).path
        part = partial_file(settings, url)  # the server's data dir is settings.home

        sent = 4 * 2**20
        host, port = urlsplit(server.url).hostname, urlsplit(server.url).port
        sock = socket.create_connection((host, port))
        try:
            request = (
                f"PATCH {url} HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: {auth['Authorization']}\r\n"
                f"Tus-Resumable: 1.0.0\r\nContent-Type: application/offset+octet-stream\r\n"
                f"Upload-Offset: 0\r\nContent-Length: {len(data)}\r\n\r\n"
            )
            sock.sendall(request.encode() + data[:sent])
            _until(lambda: part.stat().st_size >= 2**20, "the server to write the first MiB")
            busy = http.patch(url, content=b"x", headers={**CHUNK_TYPE, "Upload-Offset": "0"})
            assert busy.status_code == 409 and "Another request is writing" in busy.json()["detail"]
            on_disk = part.stat().st_size
        finally:
            sock.close()  # the client dies mid-body

        def recorded() -> bool:
            return int(http.head(url).headers["Upload-Offset"]) > 0

        _until(recorded, "the interrupted PATCH to record its offset")
        offset = int(http.head(url).headers["Upload-Offset"])
        assert on_disk <= offset <= sent
        r = http.patch(url, content=data[offset:], headers={**CHUNK_TYPE, "Upload-Offset": str(offset)})
        assert r.status_code == 204, r.text
        assert r.headers["Labcloud-File-Sha256"] == sha256(data)
        assert http.get("/api/v1/files/drop.bin").content == data
