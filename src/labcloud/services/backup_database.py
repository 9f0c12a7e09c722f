"""The database part of a backup: a consistent snapshot of the live database, what that snapshot refers to,
and putting a snapshot back into an empty database.

SQLite is copied with SQLite's online backup API (one step, in a read transaction: writers go on in WAL
mode). PostgreSQL is dumped by ``pg_dump`` (custom format) inside a repeatable-read transaction whose
snapshot it shares (``pg_export_snapshot``): the dump and the list of objects and jobs read from that same
transaction see exactly the same rows.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from alembic.runtime.migration import MigrationContext
from sqlalchemy import URL, Connection, create_engine, func, inspect, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from labcloud.db.models import DirectUpload, FileEntry, Job, JobInput, Project, Upload, User
from labcloud.services.backup_places import BackupError
from labcloud.settings import Settings

SQLITE_FILE = "database/labcloud.sqlite3"
PG_DUMP_FILE = "database/labcloud.pgdump"


@dataclass
class References:
    """What a database snapshot refers to outside itself, and how much it holds."""

    objects: dict[str, str | None] = field(default_factory=dict)  # stored object → SHA-256 its rows expect
    job_ids: list[uuid.UUID] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)


@dataclass
class Snapshot:
    kind: str  # sqlite | postgresql
    path: Path
    revision: str | None
    refs: References

    @property
    def name(self) -> str:
        """Its name inside the backup."""
        return SQLITE_FILE if self.kind == "sqlite" else PG_DUMP_FILE


def kind_of(settings: Settings) -> str:
    url = settings.effective_database_url
    if settings.is_sqlite:
        return "sqlite"
    if make_url(url).get_backend_name() == "postgresql":
        return "postgresql"
    raise BackupError(f"backups know SQLite and PostgreSQL, not {make_url(url).get_backend_name()}")


def sqlite_path(settings: Settings) -> Path:
    database = make_url(settings.effective_database_url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        raise BackupError(f"the SQLite database {database!r} is not a file a backup can copy")
    return Path(database)


# ------------------------------------------------------------------------------------------ snapshot


def snapshot(settings: Settings, folder: Path) -> Snapshot:
    """A consistent copy of the live database in ``folder``, with what it refers to."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    if kind_of(settings) == "sqlite":
        return _sqlite_snapshot(settings, folder / "labcloud.sqlite3")
    return _pg_snapshot(settings, folder / "labcloud.pgdump")


def _sqlite_snapshot(settings: Settings, out: Path) -> Snapshot:
    source = sqlite_path(settings)
    if not source.is_file():
        raise BackupError(f"there is no database at {source}: is this the server's home?")
    src = sqlite3.connect(source, timeout=settings.sqlite_busy_timeout_s)
    try:
        dst = sqlite3.connect(out)
        try:
            src.backup(dst)  # all pages in one step: a read transaction, so one consistent state
            dst.execute("PRAGMA journal_mode=DELETE")  # one self-contained file
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    if check != "ok":
        raise BackupError(f"the copy of the SQLite database fails SQLite's check: {check}")
    os.chmod(out, 0o600)
    engine = create_engine(f"sqlite:///{out}", poolclass=NullPool)
    try:
        with engine.connect() as conn:
            refs, revision = references(conn), MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
    return Snapshot("sqlite", out, revision, refs)


def _pg_snapshot(settings: Settings, out: Path) -> Snapshot:
    url = make_url(settings.effective_database_url)
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="REPEATABLE READ")
            with conn.begin():
                conn.execute(text("SET TRANSACTION READ ONLY"))
                exported = conn.execute(text("SELECT pg_export_snapshot()")).scalar_one()
                _run(
                    "pg_dump",
                    ["--format=custom", f"--snapshot={exported}", f"--file={out}"],
                    url,
                )
                refs, revision = references(conn), MigrationContext.configure(conn).get_current_revision()
    except OperationalError as exc:
        raise BackupError(f"cannot read the database: {exc.orig or exc}") from exc
    finally:
        engine.dispose()
    os.chmod(out, 0o600)
    return Snapshot("postgresql", out, revision, refs)


def references(conn: Connection) -> References:
    """The objects, jobs and counts of the database ``conn`` reads (any schema revision that has files)."""
    tables = set(inspect(conn).get_table_names())
    refs = References()
    rows = conn.execute(select(FileEntry.blob_key, FileEntry.sha256).where(FileEntry.blob_key.is_not(None)))
    for key, sha256 in rows:
        if key is not None:
            refs.objects[key] = sha256
    if JobInput.__tablename__ in tables:  # what jobs hold as their inputs' content
        for key, sha256 in conn.execute(select(JobInput.blob_key, JobInput.sha256)):
            refs.objects.setdefault(key, sha256)
    refs.job_ids = list(conn.scalars(select(Job.id)))
    for name, model in (
        ("users", User),
        ("projects", Project),
        ("files", FileEntry),
        ("jobs", Job),
        ("uploads_in_progress", Upload),
        ("direct_uploads_in_progress", DirectUpload),
    ):
        if model.__tablename__ in tables:
            refs.counts[name] = conn.scalar(select(func.count()).select_from(model)) or 0
    return refs


def _run(tool: str, args: list[str], url: URL) -> None:
    """Run a PostgreSQL client tool on the database at ``url`` (its password in the environment)."""
    exe = shutil.which(tool)
    if exe is None:
        raise BackupError(
            f"{tool} is not installed: a PostgreSQL database is backed up and restored with pg_dump and "
            "pg_restore (Debian: apt-get install postgresql-client), of the server's major version or newer"
        )
    env = dict(os.environ)
    if url.password:
        env["PGPASSWORD"] = str(url.password)
    target = url.set(drivername="postgresql", password=None).render_as_string(hide_password=False)
    done = subprocess.run(
        [exe, "--no-password", *args, f"--dbname={target}"],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise BackupError(f"{tool} failed (exit status {done.returncode}): {done.stderr.strip()}")


# ------------------------------------------------------------------------------------------ restore


def where(settings: Settings) -> str:
    """The database, for messages: the SQLite file, or the URL without its password."""
    if settings.is_sqlite:
        return str(sqlite_path(settings))
    return make_url(settings.effective_database_url).render_as_string(hide_password=True)


def refuse_unless_empty(settings: Settings) -> None:
    """BackupError unless the configured database is empty (or, PostgreSQL, does not exist yet)."""
    if kind_of(settings) == "sqlite":
        path = sqlite_path(settings)
        if path.exists() and path.stat().st_size > 0:
            raise BackupError(f"the database {path} exists: a restore goes into a new, empty installation")
        return
    if _pg_tables(make_url(settings.effective_database_url)):
        raise BackupError(
            f"the database {where(settings)} is not empty: a restore goes into an empty database (create a "
            "new one, or name one that does not exist yet and it is created)"
        )


def _pg_tables(url: URL) -> int:
    """How many tables the database holds; 0 also when it does not exist yet."""
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            count = conn.scalar(
                text(
                    "SELECT count(*) FROM information_schema.tables "
                    "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
                )
            )
            return int(count or 0)
    except OperationalError as exc:
        if _pg_exists(url) is False:
            return 0
        raise BackupError(f"cannot reach the database: {exc.orig or exc}") from exc
    finally:
        engine.dispose()


def _maintenance(url: URL) -> URL:
    return url.set(database="postgres")


def _pg_exists(url: URL) -> bool | None:
    """Whether the database exists, asked of the server's ``postgres`` database (None: cannot tell)."""
    engine = create_engine(_maintenance(url), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return conn.scalar(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}) == 1
    except OperationalError:
        return None
    finally:
        engine.dispose()


def _pg_create(url: URL) -> None:
    engine = create_engine(_maintenance(url), poolclass=NullPool, isolation_level="AUTOCOMMIT")
    name = str(url.database).replace('"', '""')
    try:
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        raise BackupError(f"cannot create the database {url.database}: {exc.orig or exc}") from exc
    finally:
        engine.dispose()


def restore(settings: Settings, kind: str, file: Path) -> None:
    """Put the snapshot ``file`` (of a database of ``kind``) in place as the configured, empty database;
    ``file`` is consumed."""
    if kind != kind_of(settings):
        raise BackupError(
            f"the backup holds a {kind} database and this installation uses {kind_of(settings)}: restore it "
            f"into an installation configured for {kind}"
        )
    if kind == "sqlite":
        target = sqlite_path(settings)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.restoring")
        shutil.move(file, tmp)
        os.chmod(tmp, 0o600)
        os.replace(tmp, target)
        return
    url = make_url(settings.effective_database_url)
    if _pg_exists(url) is False:
        _pg_create(url)
    _run(
        "pg_restore",
        ["--no-owner", "--no-privileges", "--exit-on-error", "--single-transaction", str(file)],
        url,
    )
    file.unlink()
