"""Where backups go and come from: a folder, a ``.tar.gz`` file, or an S3 prefix (``s3://bucket/prefix``,
reached with the installation's own S3 endpoint and keys).

A backup is a set of files under relative names (``manifest.json``, ``database/...``, ``objects/...``); a
:class:`Sink` writes them one by one, the manifest last, and a :class:`Source` reads them back. A backup is
complete once its manifest is there: a folder backup made in a dated series is written as ``.NAME.partial``
and renamed when done, a ``.tar.gz`` is written beside its name and renamed, and an S3 backup is complete
when its ``manifest.json`` exists (it is written last).

Dated series (``--keep-daily``/``--keep-weekly`` and scheduled backups) keep each backup in a subfolder
named after its UTC time, ``2025-03-01T04-00-00Z``; :func:`to_keep` says which of them the retention rule
keeps.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
import shutil
import tarfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any

from labcloud.settings import Settings, absolute

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

MANIFEST = "manifest.json"
CHUNK = 1 << 20
STAMP_FORMAT = "%Y-%m-%dT%H-%M-%SZ"
_STAMP = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}Z)(?:-(\d+))?")
_PARTIAL = re.compile(r"\.(.+)\.partial")
STALE_PARTIAL = timedelta(hours=24)  # an unfinished backup older than this was abandoned (a crash)
DELETE_BATCH = 1000
# The names a backup may hold: anything else in a manifest is refused (a restore never writes elsewhere).
_NAME = re.compile(r"[A-Za-z0-9._-]+(/[A-Za-z0-9._-]+)*")


class BackupError(Exception):
    """A backup or restore cannot go on; the message says why, for the operator."""


def check_name(rel: str) -> str:
    """``rel`` if it is a plain relative name inside a backup (no ``..``, not absolute), else BackupError."""
    parts = PurePosixPath(rel).parts
    if not _NAME.fullmatch(rel) or any(p in (".", "..") for p in parts):
        raise BackupError(f"not a name inside a backup: {rel!r}")
    return rel


# ------------------------------------------------------------------------------------------ streams


class HashingReader(io.RawIOBase):
    """A readable stream over ``chunks`` that counts and hashes (SHA-256) what is read through it."""

    def __init__(self, chunks: Iterable[bytes]) -> None:
        super().__init__()
        self._chunks: Iterator[bytes] = iter(chunks)
        self._pending = b""
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        while not self._pending:
            try:
                self._pending = next(self._chunks)
            except StopIteration:
                return 0
        count = min(len(view), len(self._pending))
        view[:count] = self._pending[:count]
        self.digest.update(self._pending[:count])
        self._pending = self._pending[count:]
        self.size += count
        return count

    def drain(self) -> None:
        """Read what is left (so that everything is counted and hashed)."""
        while self.read(CHUNK):
            pass

    @property
    def sha256(self) -> str:
        return self.digest.hexdigest()


def file_chunks(fh: IO[bytes], limit: int | None = None) -> Iterator[bytes]:
    """The bytes of an open file, a MiB at a time, up to ``limit`` bytes (None: to its end)."""
    left = limit
    while left is None or left > 0:
        chunk = fh.read(CHUNK if left is None else min(CHUNK, left))
        if not chunk:
            return
        if left is not None:
            left -= len(chunk)
        yield chunk


# ------------------------------------------------------------------------------------------ destinations


@dataclass(frozen=True)
class Place:
    """A parsed DEST or SRC: ``kind`` folder | tar | s3; ``path`` for the first two; bucket and prefix."""

    kind: str
    path: Path | None = None
    bucket: str = ""
    prefix: str = ""

    def __str__(self) -> str:
        if self.kind == "s3":
            return f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        return str(self.path)

    def child(self, name: str) -> Place:
        """The place of one backup of a dated series."""
        if self.kind == "s3":
            return Place("s3", bucket=self.bucket, prefix=f"{self.prefix}/{name}".strip("/"))
        assert self.path is not None
        return Place(self.kind, self.path / name)


def parse_place(text: str) -> Place:
    """``s3://bucket/prefix``, ``FILE.tar.gz`` (or ``.tgz``), or a folder."""
    text = text.strip()
    if not text:
        raise BackupError("name a folder, a .tar.gz file or s3://bucket/prefix")
    if text.startswith("s3://"):
        from labcloud.storage.s3 import parse_storage_url

        try:
            bucket, prefix = parse_storage_url(text)
        except ValueError as exc:
            raise BackupError(str(exc).replace("storage_url", "an S3 backup place")) from None
        return Place("s3", bucket=bucket, prefix=prefix)
    if "://" in text:
        raise BackupError(f"{text!r}: only folders, .tar.gz files and s3://bucket/prefix are understood")
    path = absolute(text)
    if path.name.endswith((".tar.gz", ".tgz")):
        return Place("tar", path)
    return Place("folder", path)


def s3_client(settings: Settings) -> S3Client:
    """A client for backups on S3: the installation's S3 endpoint, region and keys."""
    from labcloud.storage.s3 import S3Storage

    return S3Storage(
        "backups",
        endpoint_url=settings.s3_endpoint_url or None,
        region=settings.s3_region or None,
        access_key_id=settings.s3_access_key_id or None,
        secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
    ).client


def _s3_names(client: S3Client, bucket: str, prefix: str) -> Iterator[str]:
    start = f"{prefix}/" if prefix else ""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
        for obj in page.get("Contents", []):
            yield obj["Key"]


def _s3_delete(client: S3Client, bucket: str, names: list[str]) -> None:
    for i in range(0, len(names), DELETE_BATCH):
        batch = [{"Key": n} for n in names[i : i + DELETE_BATCH]]
        client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})  # type: ignore[typeddict-item]


class Sink(ABC):
    """Where one backup is written: files by relative name, then :meth:`finish` (or :meth:`abort`)."""

    place: Place

    @abstractmethod
    def write(self, rel: str, stream: IO[bytes], size: int) -> None:
        """Store ``size`` bytes read from ``stream`` as ``rel``."""

    def finish(self) -> None:  # noqa: B027 - optional hook
        """The manifest is written: make the backup complete where it lies."""

    @abstractmethod
    def abort(self) -> None:
        """Remove what was written."""


class FolderSink(Sink):
    """Files under ``root``: written as ``.NAME.partial`` beside it when ``staged``, renamed at the end."""

    def __init__(self, place: Place, staged: bool) -> None:
        assert place.path is not None
        self.place, self.final = place, place.path
        self.root = place.path.with_name(f".{place.path.name}.partial") if staged else place.path
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise BackupError(f"{self.root} exists and is not an empty folder: name a new one")
        self.created = not self.root.exists()
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def write(self, rel: str, stream: IO[bytes], size: int) -> None:
        target = self.root / check_name(rel)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(stream, out, CHUNK)
            out.flush()
            os.fsync(out.fileno())

    def finish(self) -> None:
        if self.root != self.final:
            os.rename(self.root, self.final)
        _fsync_dir(self.final.parent)

    def abort(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)  # all ours: it was new, or empty
        if not self.created and self.root == self.final:
            self.root.mkdir(mode=0o700, exist_ok=True)  # as it was


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class TarSink(Sink):
    """One gzip-compressed tar file, written beside its name and renamed when complete."""

    def __init__(self, place: Place) -> None:
        assert place.path is not None
        self.place, self.path = place, place.path
        if self.path.exists():
            raise BackupError(f"{self.path} exists: name a new file")
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.tmp = self.path.with_name(f".{self.path.name}.partial-{os.getpid()}")
        fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        self.raw = os.fdopen(fd, "wb")
        # Level 6: most stored objects (images, arrays, archives) barely compress; 9 only costs time.
        self.tar = tarfile.open(fileobj=self.raw, mode="w:gz", compresslevel=6)  # noqa: SIM115

    def write(self, rel: str, stream: IO[bytes], size: int) -> None:
        info = tarfile.TarInfo(check_name(rel))
        info.size, info.mode, info.mtime = size, 0o600, int(time.time())
        self.tar.addfile(info, stream)

    def finish(self) -> None:
        self.tar.close()
        self.raw.flush()
        os.fsync(self.raw.fileno())
        self.raw.close()
        os.rename(self.tmp, self.path)
        _fsync_dir(self.path.parent)

    def abort(self) -> None:
        with contextlib.suppress(Exception):
            self.tar.close()
        self.raw.close()
        self.tmp.unlink(missing_ok=True)


class S3Sink(Sink):
    """Objects under ``prefix/`` of a bucket; the manifest, written last, marks the backup complete."""

    def __init__(self, place: Place, client: S3Client) -> None:
        self.place, self.client = place, client
        if next(_s3_names(client, place.bucket, place.prefix), None) is not None:
            raise BackupError(f"{place} already holds objects: name a new prefix")
        self.written: list[str] = []

    def _name(self, rel: str) -> str:
        return f"{self.place.prefix}/{rel}" if self.place.prefix else rel

    def write(self, rel: str, stream: IO[bytes], size: int) -> None:
        name = self._name(check_name(rel))
        self.client.upload_fileobj(stream, self.place.bucket, name)
        self.written.append(name)

    def abort(self) -> None:
        _s3_delete(self.client, self.place.bucket, self.written)


def open_sink(place: Place, settings: Settings, *, staged: bool = False) -> Sink:
    if place.kind == "tar":
        return TarSink(place)
    if place.kind == "s3":
        return S3Sink(place, s3_client(settings))
    return FolderSink(place, staged)


# ------------------------------------------------------------------------------------------ sources


class Source(ABC):
    """Where a backup is read from, file by file."""

    place: Place

    @abstractmethod
    def open(self, rel: str) -> IO[bytes]:
        """The file ``rel`` of the backup, to read (BackupError when it is not there)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        pass


class FolderSource(Source):
    def __init__(self, place: Place, root: Path) -> None:
        self.place, self.root = place, root

    def open(self, rel: str) -> IO[bytes]:
        path = self.root / check_name(rel)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise BackupError(f"{self.place} has no {rel}: the backup is incomplete") from None
        return os.fdopen(fd, "rb")


class TarSource(FolderSource):
    """A ``.tar.gz`` backup, unpacked into a staging folder first (with tarfile's ``data`` filter: no links
    out, no devices, no absolute names)."""

    def __init__(self, place: Place, staging: Path) -> None:
        assert place.path is not None
        if not place.path.is_file():
            raise BackupError(f"{place.path} is not a file")
        staging.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            with tarfile.open(place.path, mode="r:gz") as tar:
                tar.extractall(staging, filter="data")
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BackupError(f"{place.path} cannot be unpacked: {exc}") from exc
        super().__init__(place, staging)


class S3Source(Source):
    def __init__(self, place: Place, client: S3Client) -> None:
        self.place, self.client = place, client

    def open(self, rel: str) -> IO[bytes]:
        from botocore.exceptions import ClientError

        check_name(rel)
        name = f"{self.place.prefix}/{rel}" if self.place.prefix else rel
        try:
            body = self.client.get_object(Bucket=self.place.bucket, Key=name)["Body"]
        except ClientError as exc:
            raise BackupError(f"{self.place} has no {rel}: {exc}") from exc
        return body  # type: ignore[return-value]  # a StreamingBody reads like a binary file


def open_source(place: Place, settings: Settings, staging: Path) -> Source:
    if place.kind == "s3":
        return S3Source(place, s3_client(settings))
    assert place.path is not None
    if place.kind == "tar":
        return TarSource(place, staging)
    if not place.path.is_dir():
        raise BackupError(f"{place.path} is not a folder, a .tar.gz file or an s3:// prefix")
    return FolderSource(place, place.path)


# ------------------------------------------------------------------------------------------ dated series


@dataclass(frozen=True)
class Dated:
    """One backup of a dated series: its name (its UTC time), that time, and whether it is complete."""

    name: str
    at: datetime
    complete: bool


def stamp_of(name: str) -> datetime | None:
    found = _STAMP.fullmatch(name)
    if found is None:
        return None
    return datetime.strptime(found.group(1), STAMP_FORMAT).replace(tzinfo=UTC)


def new_name(existing: Iterable[str], now: datetime) -> str:
    """The name of a new backup made at ``now``: its UTC time, with ``-2``... when that one is taken."""
    base = now.astimezone(UTC).strftime(STAMP_FORMAT)
    taken = set(existing)
    name, n = base, 1
    while name in taken or f".{name}.partial" in taken:
        n += 1
        name = f"{base}-{n}"
    return name


def list_series(place: Place, settings: Settings) -> list[Dated]:
    """The backups of a dated series, complete or not (newest first); other entries are not ours."""
    found: list[Dated] = []
    if place.kind == "s3":
        client = s3_client(settings)
        start = f"{place.prefix}/" if place.prefix else ""
        pages = client.get_paginator("list_objects_v2").paginate(
            Bucket=place.bucket, Prefix=start, Delimiter="/"
        )
        for page in pages:
            for common in page.get("CommonPrefixes", []):
                name = common["Prefix"][len(start) :].rstrip("/")
                at = stamp_of(name)
                if at is not None:
                    complete = _s3_exists(client, place.bucket, f"{start}{name}/{MANIFEST}")
                    found.append(Dated(name, at, complete))
    elif place.path is not None and place.path.is_dir():
        for entry in place.path.iterdir():
            if entry.is_symlink() or not entry.is_dir():
                continue
            partial = _PARTIAL.fullmatch(entry.name)
            name = partial.group(1) if partial else entry.name
            at = stamp_of(name)
            if at is not None:
                complete = partial is None and (entry / MANIFEST).is_file()
                found.append(Dated(entry.name, at, complete))
    return sorted(found, key=lambda d: (d.at, d.name), reverse=True)


def _s3_exists(client: S3Client, bucket: str, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        client.head_object(Bucket=bucket, Key=name)
    except ClientError:
        return False
    return True


def remove(place: Place, settings: Settings, name: str) -> None:
    """Delete one backup of a dated series (missing: nothing to do)."""
    if place.kind == "s3":
        client = s3_client(settings)
        child = place.child(name)
        _s3_delete(client, place.bucket, list(_s3_names(client, child.bucket, child.prefix)))
        return
    assert place.path is not None
    target = place.path / name
    if target.is_dir() and not target.is_symlink():
        shutil.rmtree(target, ignore_errors=True)


def to_keep(stamps: Iterable[datetime], keep_daily: int, keep_weekly: int) -> set[datetime]:
    """The backup times the retention rule keeps: the newest backup of each of the ``keep_daily`` newest days
    that have one, and the newest of each of the ``keep_weekly`` newest ISO weeks that have one (both in
    UTC); a backup chosen by either rule stays. The newest backup always stays."""
    ordered = sorted(set(stamps), reverse=True)
    keep: set[datetime] = set(ordered[:1])
    for count, period in ((keep_daily, _day), (keep_weekly, _week)):
        seen: set[tuple[int, ...]] = set()
        for at in ordered:
            if len(seen) >= count:
                break
            key = period(at)
            if key not in seen:
                seen.add(key)
                keep.add(at)
    return keep


def _day(at: datetime) -> tuple[int, ...]:
    utc = at.astimezone(UTC)
    return (utc.year, utc.month, utc.day)


def _week(at: datetime) -> tuple[int, ...]:
    year, week, _ = at.astimezone(UTC).isocalendar()
    return (year, week)


def prune(place: Place, settings: Settings, keep_daily: int, keep_weekly: int, now: datetime) -> list[str]:
    """Remove the complete backups of a dated series the retention rule does not keep, and unfinished ones
    older than :data:`STALE_PARTIAL` (abandoned: one being made is younger); the names removed."""
    series = list_series(place, settings)
    complete = [d for d in series if d.complete]
    kept_times = to_keep((d.at for d in complete), keep_daily, keep_weekly)
    kept: set[str] = set()
    for at in kept_times:  # of several backups in one second, the newest name
        kept.add(max((d.name for d in complete if d.at == at), key=_order))
    doomed = [d.name for d in complete if d.name not in kept]
    doomed += [d.name for d in series if not d.complete and now - d.at > STALE_PARTIAL]
    for name in doomed:
        remove(place, settings, name)
    return doomed


def _order(name: str) -> tuple[str, int]:
    found = _STAMP.fullmatch(name)
    return (found.group(1), int(found.group(2) or 1)) if found else (name, 0)
