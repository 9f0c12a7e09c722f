"""Backups of a running installation, and restoring one into a new, empty installation.

A backup is taken while the server runs and jobs run. First the database (:mod:`.backup_database`: one
consistent snapshot), then the stored objects that snapshot refers to (files, and the content jobs hold
as their inputs). Objects are immutable once written, so every object a snapshot names is complete; one
deleted between the snapshot and its copy (a file removed or replaced just then) makes the backup take the
database again and copy what the new snapshot names, a few times at most. On S3 the objects are listed
(key, size, ETag, version) rather than copied unless ``copy_objects``. Then the job logs, the home's app
files and the settings (without secrets unless ``with_secrets``), and last ``manifest.json``: what the
backup holds, each file's size and SHA-256, the labcloud version and the database's schema revision.

Not in a backup: uploads in progress (their rows are in the database, their bytes are not copied: a restore
drops those rows, so a resumed upload is told 404 and starts again), the jobs' working folders, and on S3
without ``copy_objects`` the objects themselves.

A restore goes into an empty home and an empty database: the database first (then migrated forward if the
backup is of an older schema), then the objects into the configured store, then logs and app files.
"""

from __future__ import annotations

import io
import itertools
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any, cast

from labcloud import __version__
from labcloud.db.types import utcnow
from labcloud.execution.loops import Loop
from labcloud.services import audit, backup_database, backup_settings
from labcloud.services.backup_places import (
    MANIFEST,
    BackupError,
    HashingReader,
    Place,
    Sink,
    check_name,
    file_chunks,
    list_series,
    new_name,
    open_sink,
    parse_place,
    prune,
)
from labcloud.services.job_logs import log_path, times_path
from labcloud.settings import CONFIG_FILE_NAME, Settings, absolute
from labcloud.storage import open_storage
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)

FORMAT = "labcloud-backup"
FORMAT_VERSION = 1
MAX_ROUNDS = 4  # database snapshots taken when objects it names vanish before they are copied
OBJECTS = "objects/"
OBJECT_LIST = "objects.json"
SECRET_KEY_FILE = "secrets/secret_key"
RESTORED_SETTINGS = "restored-settings"  # where a restore puts the backup's settings, to read
APP_SUFFIXES = (".yaml", ".yml")
_KEY = re.compile(r"[0-9A-Za-z]+/[0-9A-Za-z]+/[0-9A-Za-z]+")  # a stored object's key (Storage.new_key)

__all__ = ["BackupError", "Made", "Options", "ScheduledBackups", "create"]


class Cancelled(BackupError):
    """The server is stopping: the backup in progress was abandoned."""


@dataclass
class Options:
    copy_objects: bool = False  # S3: copy the objects into the backup (the local store's always are)
    with_secrets: bool = False
    keep_daily: int | None = None  # either set: a dated subfolder, and older backups pruned
    keep_weekly: int | None = None

    @property
    def dated(self) -> bool:
        return self.keep_daily is not None or self.keep_weekly is not None


@dataclass
class Made:
    place: str
    manifest: dict[str, Any]
    pruned: list[str] = field(default_factory=list)


def _nothing(_message: str) -> None:
    pass


# ------------------------------------------------------------------------------------------ making one


class _Writer:
    """Writes files into a sink and remembers each one's size and SHA-256 for the manifest."""

    def __init__(self, sink: Sink) -> None:
        self.sink = sink
        self.files: dict[str, dict[str, Any]] = {}

    def add(self, rel: str, chunks: Iterator[bytes], size: int) -> str:
        reader = HashingReader(chunks)
        self.sink.write(rel, cast(IO[bytes], reader), size)  # it reads like a binary file
        reader.drain()
        if reader.size != size:
            raise BackupError(f"{rel}: {reader.size} bytes were read where {size} were expected")
        self.files[rel] = {"size": size, "sha256": reader.sha256}
        return reader.sha256

    def add_bytes(self, rel: str, data: bytes) -> None:
        self.add(rel, iter([data]), len(data))

    def add_file(self, rel: str, path: Path, follow: bool = False) -> bool:
        """A regular file (never through a link unless ``follow``) as it is now; False if there is none."""
        try:
            fd = os.open(path, os.O_RDONLY | (0 if follow else os.O_NOFOLLOW))
        except OSError:  # not there, or a link
            return False
        with os.fdopen(fd, "rb") as fh:
            info = os.fstat(fh.fileno())
            if not _is_regular(info.st_mode):
                return False
            self.add(rel, file_chunks(fh, info.st_size), info.st_size)  # a growing log: what it held now
        return True


def _is_regular(mode: int) -> bool:
    return stat.S_ISREG(mode)


def create(
    settings: Settings,
    dest: str,
    options: Options,
    *,
    say: Callable[[str], None] = _nothing,
    stopping: Callable[[], bool] = lambda: False,
) -> Made:
    """Back the installation up to ``dest`` (a folder, FILE.tar.gz or s3://bucket/prefix)."""
    place = parse_place(dest)
    if options.dated and place.kind == "tar":
        raise BackupError(
            "--keep-daily and --keep-weekly keep dated backups in subfolders: name a folder or "
            "s3://bucket/prefix, not a .tar.gz file"
        )
    if options.dated and not (options.keep_daily or options.keep_weekly):
        raise BackupError("keeping 0 daily and 0 weekly backups would keep none: give at least one")
    storage = open_storage(settings)
    copy = storage.kind == "local" or options.copy_objects
    started = utcnow()
    target = place
    if options.dated:
        target = place.child(new_name((d.name for d in list_series(place, settings)), started))
    settings.ensure_home()
    sink = open_sink(target, settings, staged=options.dated)
    work = Path(tempfile.mkdtemp(prefix=".backup-", dir=settings.home))
    try:
        manifest = _make(settings, storage, _Writer(sink), target, copy, options, work, say, stopping)
        manifest["created_at"] = started.isoformat()
        sink.write(MANIFEST, _json_stream(manifest), len(_json(manifest)))
        sink.finish()
    except BaseException:
        sink.abort()
        raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    made = Made(str(target), manifest)
    if options.dated:
        made.pruned = prune(place, settings, options.keep_daily or 0, options.keep_weekly or 0, started)
    details = {"files": len(manifest.get("files", {})), "with_secrets": options.with_secrets}
    audit.record_for(settings, "backup.created", "backup", made.place, {**details, "pruned": made.pruned})
    return made


def _json(data: Any) -> bytes:
    return json.dumps(data, indent=1, sort_keys=True).encode()


def _json_stream(data: Any) -> IO[bytes]:
    return io.BytesIO(_json(data))


def _make(
    settings: Settings,
    storage: Storage,
    writer: _Writer,
    target: Place,
    copy: bool,
    options: Options,
    work: Path,
    say: Callable[[str], None],
    stopping: Callable[[], bool],
) -> dict[str, Any]:
    copied: dict[str, int] = {}  # object → size, of those in the backup
    damaged: set[str] = set()
    gone_before: set[str] | None = None
    listing: dict[str, dict[str, Any]] = {}
    snap = None
    for round_ in range(1, MAX_ROUNDS + 1):
        if snap is not None:
            shutil.rmtree(snap.path.parent, ignore_errors=True)
        snap = backup_database.snapshot(settings, work / f"database-{round_}")
        wanted = snap.refs.objects
        say(f"database: {_counts(snap.refs.counts)}; {len(wanted)} stored object(s) referred to")
        if copy:
            gone = _copy_objects(storage, writer, wanted, copied, damaged, stopping)
        else:
            listing = _inventory(storage)
            gone = {key for key in wanted if key not in listing}
        if not gone or (gone_before is not None and gone <= gone_before):
            break  # nothing missing, or the same objects again: they are not in the store at all
        gone_before = gone
        say(f"{len(gone)} object(s) were deleted during the backup: reading the database again")
    assert snap is not None
    have = copied if copy else listing
    missing = sorted(k for k in snap.refs.objects if k not in have)
    if missing:
        say(
            f"warning: {len(missing)} object(s) the database refers to are not in the store "
            f"(e.g. {missing[0]}): their files cannot be restored"
        )
    if damaged:
        say(f"warning: {len(damaged)} stored object(s) do not match their recorded SHA-256")

    storage_part: dict[str, Any] = {"kind": storage.kind, "objects": "copied" if copy else "listed"}
    if storage.kind == "s3":
        from labcloud.storage.s3 import S3Storage

        assert isinstance(storage, S3Storage)
        storage_part |= {
            "bucket": storage.bucket,
            "prefix": storage.prefix,
            "endpoint_url": storage.endpoint_url or "",
        }
    if copy:  # (with, after a deletion, objects the final snapshot no longer names: swept after a restore)
        storage_part |= {"count": len(copied), "bytes": sum(copied.values())}
    else:
        listed = {k: {**listing[k], "sha256": sha} for k, sha in snap.refs.objects.items() if k in listing}
        writer.add_bytes(OBJECT_LIST, _json(listed))
        storage_part |= {"count": len(listed), "bytes": sum(v["size"] for v in listed.values())}

    logs = _add_logs(settings, writer, snap.refs.job_ids)
    apps = _add_apps(settings, writer)
    settings_part = _add_settings(settings, writer, options.with_secrets)
    writer.add_file(snap.name, snap.path)
    say(
        f"{storage_part['count']} object(s) {storage_part['objects']}, {logs} job log(s), "
        f"{apps} app file(s); written to {target}"
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "labcloud_version": __version__,
        "alembic_revision": snap.revision,
        "database": {"kind": snap.kind, "file": snap.name},
        "storage": storage_part,
        "counts": snap.refs.counts,
        "missing_objects": missing,
        "damaged_objects": sorted(damaged),
        "job_logs": logs,
        "apps": apps,
        "settings": settings_part,
        "with_secrets": options.with_secrets,
        "files": writer.files,
    }


def _counts(counts: dict[str, int]) -> str:
    return ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in counts.items())


def _copy_objects(
    storage: Storage,
    writer: _Writer,
    wanted: dict[str, str | None],
    copied: dict[str, int],
    damaged: set[str],
    stopping: Callable[[], bool],
) -> set[str]:
    """Copy the objects of ``wanted`` not copied yet; the ones that are not in the store."""
    gone = set()
    for key in sorted(wanted):
        if key in copied:
            continue
        if stopping():
            raise Cancelled("the server is stopping: the backup was abandoned")
        try:
            size = storage.size(key)
            chunks = storage.iter_bytes(key)
            first = next(chunks, b"")  # opened (a local file stays readable once open) before writing
        except FileNotFoundError:
            gone.add(key)
            continue
        sha256 = writer.add(f"{OBJECTS}{key}", itertools.chain([first], chunks), size)
        copied[key] = size
        if wanted[key] and wanted[key] != sha256:
            damaged.add(key)
    return gone


def _inventory(storage: Storage) -> dict[str, dict[str, Any]]:
    """Every object of an S3 store: size, ETag and (on a versioned bucket) the current version."""
    from botocore.exceptions import ClientError

    from labcloud.storage.s3 import S3Storage

    assert isinstance(storage, S3Storage)
    client, bucket = storage.client, storage.bucket
    start = f"{storage.prefix}/" if storage.prefix else ""
    try:
        versioned = client.get_bucket_versioning(Bucket=bucket).get("Status") == "Enabled"
    except ClientError:
        versioned = False
    found: dict[str, dict[str, Any]] = {}
    if versioned:
        pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=start)
        for versions in pages:
            for version in versions.get("Versions", []):
                if version.get("IsLatest"):
                    found[version["Key"][len(start) :]] = {
                        "size": version["Size"],
                        "etag": version.get("ETag", "").strip('"'),
                        "version_id": version.get("VersionId"),
                    }
    else:
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=start):
            for obj in page.get("Contents", []):
                etag = obj.get("ETag", "").strip('"')
                found[obj["Key"][len(start) :]] = {"size": obj["Size"], "etag": etag}
    return found


def _add_logs(settings: Settings, writer: _Writer, job_ids: list[uuid.UUID]) -> int:
    count = 0
    for job_id in job_ids:
        log_file = log_path(settings, job_id)
        if writer.add_file(f"logs/{job_id}/job.log", log_file):
            count += 1
            writer.add_file(f"logs/{job_id}/{times_path(log_file).name}", times_path(log_file))
    return count


def _add_apps(settings: Settings, writer: _Writer) -> int:
    folder = settings.effective_apps_dir
    if not folder.is_dir():
        return 0
    count = 0
    for entry in sorted(folder.iterdir()):
        if entry.name.startswith(".") or not entry.name.endswith(APP_SUFFIXES):
            continue
        try:
            check_name(f"apps/{entry.name}")
        except BackupError:
            continue
        if writer.add_file(f"apps/{entry.name}", entry, follow=True):
            count += 1
    return count


def config_path(settings: Settings) -> Path:
    """The configuration file of the installation ``settings`` describe: $LABCLOUD_CONFIG, else the one in
    its home."""
    explicit = os.environ.get("LABCLOUD_CONFIG")
    return absolute(explicit) if explicit else settings.home / CONFIG_FILE_NAME


def _add_settings(settings: Settings, writer: _Writer, with_secrets: bool) -> dict[str, Any]:
    part: dict[str, Any] = {"settings": "settings/settings.json", "config_file": None, "secret_key": None}
    writer.add_bytes(part["settings"], _json(backup_settings.document(settings, with_secrets)))
    config = backup_settings.config_text(config_path(settings), settings, with_secrets)
    if config is not None:
        part["config_file"] = f"settings/{CONFIG_FILE_NAME}"
        writer.add_bytes(part["config_file"], config.encode())
    if with_secrets and writer.add_file(SECRET_KEY_FILE, settings.home / "secret_key"):
        part["secret_key"] = SECRET_KEY_FILE
    return part


# ------------------------------------------------------------------------------------------ schedule


class ScheduledBackups(Loop):
    """On the leader: a dated backup into ``backup_dest`` whenever the newest one there is older than
    ``backup_every_h`` (so a restart or a new leader does not make an extra one), then pruning."""

    def __init__(self, settings: Settings) -> None:
        every_s = settings.backup_every_h * 3600
        super().__init__("backups", min(300.0, max(1.0, every_s / 10)), step_first=True)
        self.settings = settings

    def due(self, now: datetime) -> bool:
        place = parse_place(self.settings.backup_dest)
        newest = next((d for d in list_series(place, self.settings) if d.complete), None)
        return newest is None or now - newest.at >= timedelta(hours=self.settings.backup_every_h)

    def step(self) -> None:
        if not self.due(utcnow()):
            return
        options = Options(
            copy_objects=self.settings.backup_copy_objects,
            with_secrets=self.settings.backup_with_secrets,
            keep_daily=self.settings.backup_keep_daily,
            keep_weekly=self.settings.backup_keep_weekly,
        )
        try:
            made = create(self.settings, self.settings.backup_dest, options, stopping=lambda: self.stopping)
        except Cancelled:
            return
        except BackupError as exc:
            log.warning("scheduled backup failed: %s", exc)
            return
        log.info("scheduled backup made: %s; removed by retention: %s", made.place, made.pruned or "none")
