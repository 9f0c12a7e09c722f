"""Housekeeping removes what crashes and abandoned uploads leave, and nothing that is in use."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from conftest import Account
from labcloud.db.models import DirectUpload
from labcloud.services import housekeeping
from labcloud.settings import Settings


def _ctx(client: TestClient) -> Any:
    return client.app.state.ctx  # type: ignore[attr-defined]


def test_unreferenced_objects_and_stale_temporaries_go_live_files_stay(
    storage_backend: str, client: TestClient, settings: Settings, user: Account, tmp_path: Any
) -> None:
    ctx = _ctx(client)
    assert client.put("/api/v1/files/kept.txt", content=b"in use", headers=user.headers).status_code == 201
    orphan_source = tmp_path / "orphan"
    orphan_source.write_bytes(b"stored, then the server died before indexing it")
    orphan = ctx.storage.new_key()
    ctx.storage.put_file(orphan, orphan_source)
    staging = settings.uploads_dir / "put"
    staging.mkdir(parents=True, exist_ok=True)
    stale, fresh = staging / "stale.part", staging / "fresh.part"
    stale.write_bytes(b"x")
    fresh.write_bytes(b"y")
    old = time.time() - settings.upload_expiry_hours * 3600 - 60
    os.utime(stale, (old, old))

    report = housekeeping.run_once(ctx.db, ctx.storage, settings, orphan_age=timedelta(0))
    assert report.problems == []
    assert report.orphans_removed == 1 and not ctx.storage.exists(orphan)
    assert report.temporary_files_removed == 1 and not stale.exists() and fresh.exists()
    assert client.get("/api/v1/files/kept.txt", headers=user.headers, follow_redirects=False).status_code in (
        200,
        307,
    )
    keys = list(ctx.storage.iter_keys(datetime.now(UTC) + timedelta(minutes=1)))
    assert len(keys) == 1  # the live file's object


def test_young_objects_are_left_alone(client: TestClient, settings: Settings, tmp_path: Any) -> None:
    ctx = _ctx(client)
    source = tmp_path / "young"
    source.write_bytes(b"between storing and indexing")
    key = ctx.storage.new_key()
    ctx.storage.put_file(key, source)
    assert housekeeping.run_once(ctx.db, ctx.storage, settings).orphans_removed == 0
    assert ctx.storage.exists(key)


@pytest.mark.parametrize("storage_backend", ["s3"], indirect=True)
def test_abandoned_direct_uploads_are_aborted(
    storage_backend: str, client: TestClient, settings: Settings, user: Account
) -> None:
    settings.presign_expiry_s = 30
    r = client.post("/api/v1/direct-uploads", json={"path": "gone.bin", "size": 10}, headers=user.headers)
    assert r.status_code == 201, r.text
    plan = r.json()
    ctx = _ctx(client)
    assert housekeeping.run_once(ctx.db, ctx.storage, settings).direct_uploads_expired == 0
    with ctx.db.session() as session:
        session.execute(update(DirectUpload).values(expires_at=datetime.now(UTC) - timedelta(seconds=1)))
    assert housekeeping.run_once(ctx.db, ctx.storage, settings).direct_uploads_expired == 1
    put = httpx.put(plan["parts"][0]["url"], content=b"0123456789", timeout=30)
    assert put.status_code == 404  # the store forgot the multipart upload
    done = client.post(
        f"/api/v1/direct-uploads/{plan['id']}/complete",
        json={"parts": [{"part_number": 1, "etag": '"x"'}]},
        headers=user.headers,
    )
    assert done.status_code == 404
