"""The blob store interface, on both stores: local disk and S3 (a real SeaweedFS, see tests/seaweed.py)."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

import httpx
import pytest
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from fastapi.testclient import TestClient
from pydantic import SecretStr

from labcloud.errors import Conflict
from labcloud.settings import Settings
from labcloud.storage import open_storage
from labcloud.storage.base import DirectUploadUnsupported, Storage
from labcloud.storage.local import LocalStorage
from labcloud.storage.s3 import S3Storage, StorageUnavailable, content_disposition, parse_storage_url
from seaweed import SeaweedFS
from testing.daemons import free_port

pytestmark = pytest.mark.db_agnostic  # the blob stores alone

MiB = 1 << 20


@pytest.fixture
def store(storage_backend: str, settings: Settings) -> Storage:
    """The store the settings name, once per backend (``storage_backend`` set the settings up)."""
    storage = open_storage(settings)
    assert storage.kind == storage_backend
    storage.check()
    return storage


@pytest.fixture
def s3_settings(settings: Settings, seaweedfs: SeaweedFS, s3_bucket: str) -> Settings:
    return settings.model_copy(
        update={
            "storage_url": f"s3://{s3_bucket}/labcloud",
            "s3_endpoint_url": seaweedfs.endpoint_url,
            "s3_region": seaweedfs.region,
            "s3_access_key_id": seaweedfs.access_key,
            "s3_secret_access_key": SecretStr(seaweedfs.secret_key),
        }
    )


@pytest.fixture
def s3_store(s3_settings: Settings) -> S3Storage:
    storage = open_storage(s3_settings)
    assert isinstance(storage, S3Storage)
    storage.check()
    return storage


@pytest.fixture
def make_file(tmp_path: Path) -> Callable[[bytes], Path]:
    """A fresh local file holding ``data``, ready for put_file."""
    counter = iter(range(1_000_000))

    def make(data: bytes) -> Path:
        path = tmp_path / f"upload-{next(counter)}.bin"
        path.write_bytes(data)
        return path

    return make


def read_all(storage: Storage, key: str, start: int = 0, end: int | None = None) -> bytes:
    return b"".join(storage.iter_bytes(key, start, end))


# -- both stores -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [0, 1, 3 * MiB + 7], ids=["empty", "one-byte", "3MiB"])
def test_put_file_consumes_the_source_and_reads_back_identical(
    store: Storage, make_file: Callable[[bytes], Path], size: int
) -> None:
    data = os.urandom(size)
    source = make_file(data)
    key = store.new_key()
    assert not store.exists(key)

    store.put_file(key, source)

    assert not source.exists()
    assert store.exists(key)
    assert store.size(key) == size
    assert read_all(store, key) == data


def test_keys_are_fresh_and_fanned_out(store: Storage) -> None:
    keys = {store.new_key() for _ in range(200)}
    assert len(keys) == 200
    for key in keys:
        first, second, name = key.split("/")
        assert len(first) == len(second) == 2 and len(name) == 32
        assert name.endswith(second + first)


def test_iter_bytes_ranges(store: Storage, make_file: Callable[[bytes], Path]) -> None:
    data = os.urandom(2 * MiB + 333)
    size = len(data)
    key = store.new_key()
    store.put_file(key, make_file(data))

    cases: list[tuple[int, int | None]] = [
        (0, 1),
        (0, 0),
        (5, 17),
        (MiB - 3, MiB + 5),  # across a chunk boundary
        (100, None),
        (size - 1, None),
        (size - 1, size),
        (0, size),
        (0, size + 100),  # past the end: up to the end
        (size, None),  # start at the end: nothing
        (size, size + 10),
        (size + 5, None),  # start past the end: nothing
        (10, 5),  # end before start: nothing
    ]
    for start, end in cases:
        expected = data[start:end]
        chunks = list(store.iter_bytes(key, start, end))
        assert b"".join(chunks) == expected, (start, end)
        assert all(0 < len(c) <= MiB for c in chunks), (start, end)


def test_iter_bytes_of_an_empty_object(store: Storage, make_file: Callable[[bytes], Path]) -> None:
    key = store.new_key()
    store.put_file(key, make_file(b""))
    assert read_all(store, key) == b""
    assert read_all(store, key, 0, 10) == b""
    assert store.size(key) == 0


def test_fetch_writes_an_independent_copy(
    store: Storage, make_file: Callable[[bytes], Path], tmp_path: Path
) -> None:
    data = os.urandom(MiB + 11)
    key = store.new_key()
    store.put_file(key, make_file(data))
    dest = tmp_path / "copy.bin"

    with open(dest, "wb") as fh:
        store.fetch(key, fh)

    assert dest.read_bytes() == data
    with open(dest, "r+b") as fh:  # changing the copy in place leaves the object alone
        fh.write(b"\0" * 64)
    dest.unlink()
    assert read_all(store, key) == data
    assert store.size(key) == len(data)


def test_missing_objects(store: Storage, tmp_path: Path) -> None:
    key = store.new_key()
    assert not store.exists(key)
    with pytest.raises(FileNotFoundError):
        store.size(key)
    with pytest.raises(FileNotFoundError):
        read_all(store, key)
    with open(tmp_path / "nothing", "wb") as fh, pytest.raises(FileNotFoundError):
        store.fetch(key, fh)
    assert (tmp_path / "nothing").stat().st_size == 0


def test_delete_removes_objects_and_ignores_missing_ones(
    store: Storage, make_file: Callable[[bytes], Path]
) -> None:
    kept, gone = store.new_key(), store.new_key()
    store.put_file(kept, make_file(b"kept"))
    store.put_file(gone, make_file(b"gone"))
    missing = [store.new_key() for _ in range(1001)]  # more than one S3 DeleteObjects batch

    store.delete([*missing[:600], gone, *missing[600:]])
    store.delete([gone])  # twice is fine
    store.delete([])

    assert not store.exists(gone)
    assert store.exists(kept)
    assert read_all(store, kept) == b"kept"


def test_keys_that_are_not_ours_are_refused(store: Storage, make_file: Callable[[bytes], Path]) -> None:
    for bad in ["../ab/cd", "ab/cd", "ab/cd/ef/gh", "ab//cd", "ab/cd/e.f", "/ab/cd/ef", ""]:
        with pytest.raises(ValueError):
            store.exists(bad)
        with pytest.raises(ValueError):
            store.put_file(bad, make_file(b"x"))


def test_iter_keys_respects_older_than_and_skips_foreign_objects(
    store: Storage, make_file: Callable[[bytes], Path]
) -> None:
    before = datetime.now(UTC)
    key = store.new_key()
    store.put_file(key, make_file(b"object"))
    foreign = ["notes.txt", "ab/cd/x.part", "ab/cd", "ab/cd/ef/gh"]
    _put_foreign(store, foreign)
    after = datetime.now(UTC)

    # Stores keep modification times to the second at least: two seconds either side is unambiguous.
    assert list(store.iter_keys(before - timedelta(seconds=2))) == []
    assert list(store.iter_keys(after + timedelta(seconds=2))) == [key]
    naive_local = (after + timedelta(seconds=2)).astimezone().replace(tzinfo=None)
    assert list(store.iter_keys(naive_local)) == [key]

    store.delete([key])
    assert list(store.iter_keys(after + timedelta(seconds=2))) == []


def _put_foreign(store: Storage, names: list[str]) -> None:
    """Objects under the store's root that labcloud did not write (and one outside it, on S3)."""
    if isinstance(store, LocalStorage):
        for name in names:
            path = store.root / name
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(b"foreign")
        return
    assert isinstance(store, S3Storage)
    for name in names:
        store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/{name}", Body=b"foreign")
    outside = Storage.new_key()
    store.client.put_object(Bucket=store.bucket, Key=f"elsewhere/{outside}", Body=b"foreign")
    store.client.put_object(Bucket=store.bucket, Key=outside, Body=b"foreign")


def test_the_local_store_serves_its_own_files_and_has_no_presigned_urls(
    settings: Settings, make_file: Callable[[bytes], Path]
) -> None:
    store = open_storage(settings)
    assert isinstance(store, LocalStorage)
    key = store.new_key()
    store.put_file(key, make_file(b"abc"))
    path = store.local_path(key)
    assert path is not None and path.read_bytes() == b"abc"
    assert store.presigned_get(key, "a.txt", 60) is None


def test_the_local_store_refuses_direct_uploads(settings: Settings) -> None:
    store = open_storage(settings)
    key = store.new_key()
    calls: list[Callable[[], object]] = [
        lambda: store.start_multipart(key),
        lambda: store.presign_part(key, "id", 1, 60),
        lambda: store.complete_multipart(key, "id", [(1, '"etag"')]),
        lambda: store.abort_multipart(key, "id"),
    ]
    for call in calls:
        with pytest.raises(DirectUploadUnsupported) as info:
            call()
        assert isinstance(info.value, Conflict)
        assert info.value.status == 409
    with pytest.raises(DirectUploadUnsupported, match="/api/v1/uploads"):  # points to tus instead
        store.start_multipart(key)
    assert not store.exists(key)


# -- S3 only ---------------------------------------------------------------------------------------------
def test_parse_storage_url() -> None:
    assert parse_storage_url("s3://bucket") == ("bucket", "")
    assert parse_storage_url("s3://bucket/") == ("bucket", "")
    assert parse_storage_url("s3://bucket/a/b/") == ("bucket", "a/b")
    assert parse_storage_url(" s3://bucket//a//b ") == ("bucket", "a/b")
    for bad in ["s3:///prefix", "http://bucket/x", "s3://bucket/x?y=1", "bucket/x"]:
        with pytest.raises(ValueError):
            parse_storage_url(bad)


def test_content_disposition() -> None:
    assert content_disposition("data.csv") == 'attachment; filename="data.csv"'
    assert content_disposition('say "hi".txt') == (
        "attachment; filename=\"say _hi_.txt\"; filename*=UTF-8''say%20%22hi%22.txt"
    )
    assert content_disposition("résumé 1.pdf") == (
        "attachment; filename=\"r_sum_ 1.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"
    )


def test_objects_live_under_the_prefix(
    s3_store: S3Storage, seaweedfs: SeaweedFS, s3_bucket: str, make_file: Callable[[bytes], Path]
) -> None:
    key = s3_store.new_key()
    s3_store.put_file(key, make_file(b"where am I"))
    listed = seaweedfs.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == [f"labcloud/{key}"]
    assert s3_store.local_path(key) is None


def test_an_empty_prefix_puts_objects_at_the_bucket_root(
    s3_settings: Settings, seaweedfs: SeaweedFS, s3_bucket: str, make_file: Callable[[bytes], Path]
) -> None:
    store = open_storage(s3_settings.model_copy(update={"storage_url": f"s3://{s3_bucket}"}))
    key = store.new_key()
    store.put_file(key, make_file(b"root"))
    listed = seaweedfs.client().list_objects_v2(Bucket=s3_bucket)["Contents"]
    assert [o["Key"] for o in listed] == [key]
    assert list(store.iter_keys(datetime.now(UTC) + timedelta(seconds=2))) == [key]


def test_large_files_go_up_in_parts(s3_store: S3Storage, make_file: Callable[[bytes], Path]) -> None:
    # The same managed transfer as for 64 MiB parts, with the smallest parts S3 takes, to keep it quick.
    s3_store.transfer = TransferConfig(multipart_threshold=5 * MiB, multipart_chunksize=5 * MiB)
    data = os.urandom(11 * MiB + 5)
    key = s3_store.new_key()
    source = make_file(data)
    s3_store.put_file(key, source)
    assert not source.exists()
    etag = s3_store.client.head_object(Bucket=s3_store.bucket, Key=f"labcloud/{key}")["ETag"]
    assert etag.strip('"').endswith("-3"), etag  # a multipart object: three parts
    assert read_all(s3_store, key) == data


@pytest.mark.parametrize(
    ("filename", "fallback", "encoded"),
    [
        ("results.csv", "results.csv", None),
        ("Résumé (final).pdf", "R_sum_ (final).pdf", "R%C3%A9sum%C3%A9%20%28final%29.pdf"),
        ("数据.txt", "__.txt", "%E6%95%B0%E6%8D%AE.txt"),
    ],
)
def test_presigned_get_downloads_as_the_file_name(
    s3_store: S3Storage, make_file: Callable[[bytes], Path], filename: str, fallback: str, encoded: str | None
) -> None:
    data = os.urandom(300_000)
    key = s3_store.new_key()
    s3_store.put_file(key, make_file(data))

    url = s3_store.presigned_get(key, filename, 120)

    assert url is not None
    assert parse_qs(urlsplit(url).query)["X-Amz-Expires"] == ["120"]
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200, r.text
    assert r.content == data
    disposition = r.headers["content-disposition"]
    assert disposition.startswith("attachment;")
    assert f'filename="{fallback}"' in disposition
    if encoded is None:
        assert "filename*" not in disposition
    else:
        assert f"filename*=UTF-8''{encoded}" in disposition


def test_a_presigned_get_to_view_shows_the_object_as_its_media_type(
    s3_store: S3Storage, make_file: Callable[[bytes], Path]
) -> None:
    key = s3_store.new_key()
    s3_store.put_file(key, make_file(b"a,b\n1,2\n"))
    url = s3_store.presigned_get(key, "t.csv", 120, "text/plain; charset=utf-8")
    assert url is not None
    r = httpx.get(url, timeout=30)
    assert r.status_code == 200 and r.content == b"a,b\n1,2\n"
    assert r.headers["content-disposition"].startswith("inline;")
    assert r.headers["content-type"] == "text/plain; charset=utf-8"


def test_seaweedfs_checks_signatures(
    s3_store: S3Storage, s3_settings: Settings, make_file: Callable[[bytes], Path]
) -> None:
    key = s3_store.new_key()
    s3_store.put_file(key, make_file(b"secret bytes"))
    url = s3_store.presigned_get(key, "a.txt", 120)
    assert url is not None
    assert httpx.get(url, timeout=30).status_code == 200

    parts = urlsplit(url)
    query = parse_qs(parts.query)
    signature = query["X-Amz-Signature"][0]
    flipped = ("0" if signature[0] != "0" else "1") + signature[1:]
    tampered = url.replace(f"X-Amz-Signature={signature}", f"X-Amz-Signature={flipped}")
    unsigned = urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
    longer = url.replace("X-Amz-Expires=120", "X-Amz-Expires=3600")  # a changed parameter, same signature
    wrong_key = open_storage(
        s3_settings.model_copy(update={"s3_secret_access_key": SecretStr("not-the-secret")})
    ).presigned_get(key, "a.txt", 120)
    assert wrong_key is not None
    for bad in [tampered, unsigned, longer, wrong_key]:
        r = httpx.get(bad, timeout=30)
        assert r.status_code == 403, (bad, r.status_code, r.text)
        assert b"secret bytes" not in r.content


def test_multipart_upload_through_presigned_part_urls(s3_store: S3Storage) -> None:
    parts = [os.urandom(5 * MiB), os.urandom(5 * MiB + 17), os.urandom(1234)]
    key = s3_store.new_key()
    upload_id = s3_store.start_multipart(key)
    assert upload_id

    etags: list[tuple[int, str]] = []
    for number, body in enumerate(parts, start=1):
        url = s3_store.presign_part(key, upload_id, number, 300)
        r = httpx.put(url, content=body, timeout=60)
        assert r.status_code == 200, r.text
        etags.append((number, r.headers["etag"]))
    assert not s3_store.exists(key)  # nothing to read until the upload is complete

    # ETags as a browser might hand them back: out of order, one without its quotes.
    given = [etags[2], (etags[0][0], etags[0][1].strip('"')), etags[1]]
    s3_store.complete_multipart(key, upload_id, given)

    data = b"".join(parts)
    assert s3_store.size(key) == len(data)
    assert read_all(s3_store, key) == data
    assert read_all(s3_store, key, 5 * MiB - 2, 5 * MiB + 2) == data[5 * MiB - 2 : 5 * MiB + 2]


def test_multipart_upload_part_urls_are_signed(s3_store: S3Storage) -> None:
    key = s3_store.new_key()
    upload_id = s3_store.start_multipart(key)
    url = s3_store.presign_part(key, upload_id, 1, 300)
    other_part = url.replace("partNumber=1&", "partNumber=2&")
    assert other_part != url
    r = httpx.put(other_part, content=b"x" * 100, timeout=30)
    assert r.status_code == 403, r.text
    s3_store.abort_multipart(key, upload_id)


def test_multipart_parts_must_be_big_enough_and_in_range(s3_store: S3Storage) -> None:
    key = s3_store.new_key()
    upload_id = s3_store.start_multipart(key)
    etags = []
    for number in (1, 2):
        r = httpx.put(s3_store.presign_part(key, upload_id, number, 300), content=b"x" * 1000, timeout=30)
        assert r.status_code == 200, r.text
        etags.append((number, r.headers["etag"]))
    with pytest.raises(ClientError):  # every part but the last must hold 5 MiB at least
        s3_store.complete_multipart(key, upload_id, etags)
    assert not s3_store.exists(key)
    for bad in (0, 10_001):
        with pytest.raises(ValueError):
            s3_store.presign_part(key, upload_id, bad, 300)
    s3_store.abort_multipart(key, upload_id)


def test_an_aborted_multipart_upload_cannot_be_completed(s3_store: S3Storage) -> None:
    key = s3_store.new_key()
    upload_id = s3_store.start_multipart(key)
    r = httpx.put(s3_store.presign_part(key, upload_id, 1, 300), content=b"only part", timeout=30)
    assert r.status_code == 200, r.text

    s3_store.abort_multipart(key, upload_id)
    s3_store.abort_multipart(key, upload_id)  # twice is fine

    with pytest.raises(ClientError):
        s3_store.complete_multipart(key, upload_id, [(1, r.headers["etag"])])
    assert not s3_store.exists(key)


def test_check_creates_a_missing_bucket(s3_settings: Settings, seaweedfs: SeaweedFS) -> None:
    bucket = seaweedfs.bucket_name()
    store = open_storage(s3_settings.model_copy(update={"storage_url": f"s3://{bucket}/x"}))
    try:
        store.check()
        store.check()  # and finds it the second time
        seaweedfs.client().head_bucket(Bucket=bucket)
    finally:
        seaweedfs.delete_bucket(bucket)


def test_check_reports_an_unreachable_store(s3_settings: Settings) -> None:
    port = free_port()
    store = open_storage(s3_settings.model_copy(update={"s3_endpoint_url": f"http://127.0.0.1:{port}"}))
    deadline = time.monotonic() + 10
    with pytest.raises(StorageUnavailable) as info:
        store.check()
    assert time.monotonic() < deadline  # one quick try, not minutes of retries
    assert isinstance(info.value, OSError)
    assert f"127.0.0.1:{port}" in str(info.value)


def test_check_reports_wrong_credentials(s3_settings: Settings) -> None:
    store = open_storage(s3_settings.model_copy(update={"s3_access_key_id": "NOSUCHKEY"}))
    with pytest.raises(StorageUnavailable, match="refused"):
        store.check()


def test_without_keys_in_the_settings_the_standard_aws_sources_are_used(
    s3_settings: Settings,
    seaweedfs: SeaweedFS,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    make_file: Callable[[bytes], Path],
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", seaweedfs.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", seaweedfs.secret_key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    settings = s3_settings.model_copy(
        update={
            "s3_access_key_id": "",
            "s3_secret_access_key": SecretStr(""),
        }
    )
    store = open_storage(settings)
    store.check()
    key = store.new_key()
    store.put_file(key, make_file(b"from the environment"))
    assert read_all(store, key) == b"from the environment"

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageUnavailable):
        open_storage(settings).check()


def test_an_app_uses_the_store_of_storage_backend_whatever_the_argument_order(
    client: TestClient, storage_backend: str, settings: Settings
) -> None:
    # `client` comes first here, yet the app was built after storage_backend had set the settings.
    ctx = client.app.state.ctx  # type: ignore[attr-defined]
    assert ctx.storage.kind == storage_backend
    assert (settings.storage_url != "") == (storage_backend == "s3")
