"""Restoring a backup (:mod:`labcloud.services.backup`) into an empty home: every file checked against the
manifest first, the database put in place and migrated forward, the objects put back into the configured
store, then logs, app files and the secret key; uploads in progress at backup time are dropped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete

from labcloud import __version__
from labcloud.db import migrate
from labcloud.db.engine import Database
from labcloud.db.models import DirectUpload, Upload
from labcloud.services import audit, backup_database
from labcloud.services.backup import (
    _KEY,
    FORMAT,
    FORMAT_VERSION,
    OBJECT_LIST,
    OBJECTS,
    RESTORED_SETTINGS,
    _inventory,
    _nothing,
    config_path,
)
from labcloud.services.backup_places import (
    MANIFEST,
    BackupError,
    HashingReader,
    Source,
    check_name,
    file_chunks,
    open_source,
    parse_place,
)
from labcloud.services.job_logs import log_path
from labcloud.settings import Settings
from labcloud.storage import open_storage
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------ restoring


@dataclass
class Restored:
    manifest: dict[str, Any]
    objects: int = 0
    uploads_dropped: int = 0
    missing_objects: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def refuse_unless_empty_home(settings: Settings) -> None:
    """BackupError unless the home is missing or empty (its configuration file aside)."""
    home = settings.home
    if not home.exists():
        return
    if not home.is_dir():
        raise BackupError(f"the home {home} is not a folder")
    allowed = (
        {"lost+found", config_path(settings).name} if config_path(settings).parent == home else {"lost+found"}
    )
    found = sorted(p.name for p in home.iterdir() if p.name not in allowed)
    if found:
        shown = ", ".join(found[:5]) + (" ..." if len(found) > 5 else "")
        raise BackupError(
            f"the home {home} is not empty ({shown}): a restore goes into a new, empty home; "
            "name another with --home or LABCLOUD_HOME"
        )


def restore(
    settings: Settings,
    src: str,
    *,
    allow_missing_objects: bool = False,
    say: Callable[[str], None] = _nothing,
) -> Restored:
    """Restore the backup at ``src`` into this installation's empty home and database."""
    place = parse_place(src)
    refuse_unless_empty_home(settings)
    backup_database.refuse_unless_empty(settings)
    settings.ensure_home()
    work = Path(tempfile.mkdtemp(prefix=".restore-", dir=settings.home))
    try:
        source = open_source(place, settings, work / "unpacked")
        try:
            return _restore(settings, source, work, allow_missing_objects, say)
        finally:
            source.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _restore(
    settings: Settings, source: Source, work: Path, allow_missing: bool, say: Callable[[str], None]
) -> Restored:
    with source.open(MANIFEST) as fh:
        try:
            manifest = json.loads(fh.read())
        except ValueError as exc:
            raise BackupError(f"{source.place}: its manifest is not JSON: {exc}") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise BackupError(f"{source.place} is not a labcloud backup")
    if manifest.get("format_version") != FORMAT_VERSION:
        version = manifest.get("format_version")
        raise BackupError(f"backup format {version} is not known to labcloud {__version__}")
    files: dict[str, dict[str, Any]] = manifest["files"]
    for rel in files:
        check_name(rel)
    _check_revision(settings, manifest)
    result = Restored(manifest)
    storage = open_storage(settings)
    versions = _plan_listed(settings, storage, source, manifest, files, work, result)
    result.missing_objects += [
        k for k in manifest.get("missing_objects", []) if k not in result.missing_objects
    ]
    if result.missing_objects and not allow_missing:
        where = "the store" if manifest["storage"].get("objects") == "listed" else "the backup"
        raise BackupError(
            f"{len(result.missing_objects)} stored object(s) the database refers to are not in {where} "
            f"(e.g. {result.missing_objects[0]}): their files would be restored without content. Restore "
            "anyway with --allow-missing-objects"
        )

    database = manifest["database"]
    db_file = _fetch(source, database["file"], files, work / "database")  # checked before anything is written
    storage.check()  # reachable and writable (a local store's folder is made)
    try:
        _put_back(settings, storage, source, manifest, files, work, db_file, versions, result, say)
    except BackupError as exc:
        raise BackupError(
            f"{exc}. The restore stopped part way: empty the home {settings.home} and the database before "
            "trying again"
        ) from exc
    details = {"created_at": manifest.get("created_at"), "missing_objects": len(result.missing_objects)}
    audit.record_for(settings, "backup.restored", "backup", source.place, details)
    return result


def _put_back(
    settings: Settings,
    storage: Storage,
    source: Source,
    manifest: dict[str, Any],
    files: dict[str, dict[str, Any]],
    work: Path,
    db_file: Path,
    versions: list[tuple[str, str]],
    result: Restored,
    say: Callable[[str], None],
) -> None:
    database = manifest["database"]
    backup_database.restore(settings, database["kind"], db_file)
    say(f"database restored into {backup_database.where(settings)} (schema {manifest['alembic_revision']})")
    migrate.upgrade(settings)
    if manifest["alembic_revision"] != migrate.head_revision(settings):
        say(f"database migrated to schema {migrate.head_revision(settings)}")
    result.uploads_dropped = _drop_unfinished_uploads(settings)

    for rel in sorted(r for r in files if r.startswith(OBJECTS)):
        key = rel[len(OBJECTS) :]
        if not _KEY.fullmatch(key):
            raise BackupError(f"{rel}: not a stored object's name")
        storage.put_file(key, _fetch(source, rel, files, work / "object"))  # consumes the fetched copy
        result.objects += 1
    for key, version in versions:
        _restore_version(storage, key, version)
    _restore_logs(settings, source, files, work)
    _restore_apps(settings, source, files, work, result)
    _restore_secret_key(settings, source, manifest, files, work, result)
    _restore_settings(settings, source, manifest, files, work, result)


def _check_revision(settings: Settings, manifest: dict[str, Any]) -> None:
    from alembic.script import ScriptDirectory
    from alembic.util import CommandError

    revision = manifest.get("alembic_revision")
    if revision is None:
        return
    scripts = ScriptDirectory.from_config(migrate.alembic_config(settings))
    try:
        scripts.get_revision(revision)
    except CommandError:
        raise BackupError(
            f"the backup's database is at schema revision {revision}, which labcloud {__version__} does not "
            f"know: restore it with labcloud {manifest.get('labcloud_version')} or newer"
        ) from None


def _fetch(source: Source, rel: str, files: dict[str, dict[str, Any]], folder: Path) -> Path:
    """Copy the backup's file ``rel`` into a private file of ``folder``, checked against the manifest."""
    expected = files.get(rel)
    if expected is None:
        raise BackupError(f"{rel} is not in the backup's manifest")
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    out = folder / uuid.uuid4().hex
    with source.open(rel) as fh:
        reader = HashingReader(file_chunks(fh))
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as dst:
            shutil.copyfileobj(reader, dst, 1 << 20)
    if reader.size != expected["size"] or reader.sha256 != expected["sha256"]:
        out.unlink()
        raise BackupError(
            f"{rel} in {source.place} is damaged: {reader.size} bytes with SHA-256 {reader.sha256}, "
            f"where the manifest says {expected['size']} bytes with {expected['sha256']}"
        )
    return out


def _plan_listed(
    settings: Settings,
    storage: Storage,
    source: Source,
    manifest: dict[str, Any],
    files: dict[str, dict[str, Any]],
    work: Path,
    result: Restored,
) -> list[tuple[str, str]]:
    """For a backup that lists its S3 objects: check the store holds them. The objects to put back from an
    earlier version of a versioned bucket (key, version); those that cannot be found go into ``result``."""
    part = manifest["storage"]
    if part.get("objects") != "listed":
        return []
    where = f"s3://{part['bucket']}/{part['prefix']}".rstrip("/")
    here = (getattr(storage, "bucket", None), getattr(storage, "prefix", None))
    if storage.kind != "s3" or here != (part["bucket"], part["prefix"]):
        raise BackupError(
            f"this backup lists its objects in {where} rather than holding them: restore it into an "
            f"installation whose storage_url is {where} (backups made with --copy-objects hold them)"
        )
    listed_file = _fetch(source, OBJECT_LIST, files, work / "listing")
    listed: dict[str, dict[str, Any]] = json.loads(listed_file.read_text())
    present = _inventory(storage)
    versions: list[tuple[str, str]] = []
    for key, recorded in sorted(listed.items()):
        have = present.get(key)
        if have is not None and (not recorded.get("etag") or have["etag"] == recorded["etag"]):
            continue
        if recorded.get("version_id"):
            versions.append((key, recorded["version_id"]))
        else:
            result.missing_objects.append(key)
    return versions


def _restore_version(storage: Storage, key: str, version: str) -> None:
    from labcloud.storage.s3 import S3Storage

    assert isinstance(storage, S3Storage)
    name = storage._name(key)
    earlier = {"Bucket": storage.bucket, "Key": name, "VersionId": version}
    storage.client.copy_object(Bucket=storage.bucket, Key=name, CopySource=earlier)  # type: ignore[arg-type]


def _drop_unfinished_uploads(settings: Settings) -> int:
    """Uploads in progress when the backup was taken: their bytes are not in it, so they go (a resumed
    upload is told 404 and starts again)."""
    db = Database(settings)
    try:
        with db.session() as session:
            tus = session.execute(delete(Upload)).rowcount  # type: ignore[attr-defined]
            direct = session.execute(delete(DirectUpload)).rowcount  # type: ignore[attr-defined]
    finally:
        db.dispose()
    return int(tus or 0) + int(direct or 0)


def _write_private(path: Path, source: Path) -> None:
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    shutil.move(source, path)
    os.chmod(path, 0o600)


def _restore_logs(settings: Settings, source: Source, files: dict[str, dict[str, Any]], work: Path) -> None:
    for rel in files:
        parts = rel.split("/")
        if len(parts) != 3 or parts[0] != "logs" or parts[2] not in ("job.log", "job.log.times"):
            continue
        try:
            job_id = uuid.UUID(parts[1])
        except ValueError:
            continue
        fetched = _fetch(source, rel, files, work / "log")
        _write_private(log_path(settings, job_id).with_name(parts[2]), fetched)


def _restore_apps(
    settings: Settings, source: Source, files: dict[str, dict[str, Any]], work: Path, result: Restored
) -> None:
    apps = sorted(r for r in files if r.startswith("apps/") and r.count("/") == 1)
    if not apps:
        return
    folder = settings.effective_apps_dir
    if folder.is_dir() and any(folder.iterdir()):
        result.notes.append(f"the apps folder {folder} is not empty: the backup's app files were not put in")
        return
    for rel in apps:
        _write_private(folder / rel.split("/", 1)[1], _fetch(source, rel, files, work / "app"))


def _restore_secret_key(
    settings: Settings,
    source: Source,
    manifest: dict[str, Any],
    files: dict[str, dict[str, Any]],
    work: Path,
    result: Restored,
) -> None:
    rel = manifest["settings"].get("secret_key")
    if rel is None:
        if not settings.secret_key.get_secret_value():
            result.notes.append(
                "the backup holds no signing key (made without --with-secrets): a new one is made, so "
                "everyone logs in again (passwords and API tokens still work)"
            )
        return
    if settings.secret_key.get_secret_value():
        result.notes.append("secret_key is configured: the backup's signing key was not put in the home")
        return
    _write_private(settings.home / "secret_key", _fetch(source, rel, files, work / "secret"))


def _restore_settings(
    settings: Settings,
    source: Source,
    manifest: dict[str, Any],
    files: dict[str, dict[str, Any]],
    work: Path,
    result: Restored,
) -> None:
    folder = settings.home / RESTORED_SETTINGS
    part = manifest["settings"]
    for rel in (part.get("settings"), part.get("config_file")):
        if rel:
            _write_private(folder / rel.rsplit("/", 1)[1], _fetch(source, rel, files, work / "settings"))
    result.notes.append(
        f"the backup's settings are in {folder} to read; this installation keeps its own configuration"
    )
