"""The folder of one attempt at a job: created fresh and empty, staged and collected without ever following
a link the job may have planted.

Layout (``path`` belongs to labcloud, mode 0700; the job sees only ``work``)::

    <path>/status.json  supervisor.lock  handle.json     the supervisor's control files
    <path>/work/                                         the job's folder (owned by the job's user)
               inputs/<slot>/...                         private copies of the inputs
               output/                                   what the job leaves here is its result
    <path>/collected/                                    labcloud's own copies of the outputs

Code outside the sandbox treats everything under ``work`` as hostile: it opens every name relative to a
folder it already holds (``O_NOFOLLOW``), creates files with ``O_EXCL``, skips links, devices, fifos and
sockets, and checks that what it opened really lies under ``work``. Outputs are copied, never moved; the
work folder goes only after the copies are safely stored and indexed.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from labcloud.execution.sandbox import JobUser

MAX_OUTPUT_ENTRIES = 100_000  # files and folders in a job's output
MAX_OUTPUT_DEPTH = 64
COPY_CHUNK = 1 << 20
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC

Writer = Callable[[BinaryIO], None]  # writes one input file's bytes into the file it is given
Wanted = Callable[[PurePosixPath, bool], bool]  # (path under the collected folder, is a folder): take it?


class StagingError(Exception):
    """An input could not be made available to the job."""


@dataclass(frozen=True)
class AttemptDir:
    path: Path
    user: JobUser | None = None  # the job's host user (labcloud runs as root); None: labcloud's own
    # Without a sandbox the job's user reaches its folder by its real path: the folders labcloud made from
    # this one down to the attempt's let the user's group through (search only: 0710, never listing).
    reach_from: Path | None = None

    @property
    def work(self) -> Path:
        return self.path / "work"

    @property
    def output(self) -> Path:
        return self.work / "output"

    @property
    def inputs(self) -> Path:
        return self.work / "inputs"

    @property
    def collected(self) -> Path:
        return self.path / "collected"

    @property
    def status_path(self) -> Path:
        return self.path / "status.json"

    # ------------------------------------------------------------------------------------- creating

    def create(self) -> AttemptDir:
        """Make the attempt's folders, which must not exist yet: every attempt starts from nothing (an
        earlier one may have left links in its folder for the next to follow)."""
        self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.mkdir(self.path, 0o700)
        for folder in (self.work, self.inputs, self.output):
            # 0755: the sandbox enters it as root without its override of file modes; the attempt's own
            # folder (0700) keeps everyone else out.
            os.mkdir(folder, 0o755)
            os.chmod(folder, 0o755)  # whatever the umask
            if self.user is not None:
                os.chown(folder, self.user.uid, self.user.gid)
        self._let_through()
        return self

    def _let_through(self) -> None:
        if self.user is None or self.reach_from is None:
            return
        top = self.reach_from
        for folder in (self.path, *self.path.parents):
            if folder != top and top not in folder.parents:
                break
            info = os.lstat(folder)
            if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
                continue  # not one of labcloud's own folders
            if info.st_gid != self.user.gid:
                os.chown(folder, -1, self.user.gid, follow_symlinks=False)
            os.chmod(folder, (stat.S_IMODE(info.st_mode) & ~0o070) | 0o010)

    def remove_work(self) -> None:
        """Drop the job's folder and the copies (after the outputs are stored). rmtree does not follow
        links, and the job's processes are gone."""
        shutil.rmtree(self.work, ignore_errors=True)
        shutil.rmtree(self.collected, ignore_errors=True)

    # ------------------------------------------------------------------------------------- staging

    def stage(self, slot: str, name: str, files: list[tuple[str, Writer]]) -> str:
        """Write one input slot's files under ``work/inputs/<slot>/``; the path the job gets for it.

        ``name`` is the file's or folder's name, ``files`` (path under the slot folder, writer) pairs.
        """
        slot_rel = _safe_relative(slot, "input slot")
        top = self.stage_at(PurePosixPath("inputs", slot_rel), name, files, slot)
        return str(self.inputs / slot_rel / top)

    def stage_at(
        self, folder: PurePosixPath, name: str, files: list[tuple[str, Writer]], slot: str
    ) -> PurePosixPath:
        """Write one input's files under ``work/<folder>/`` (made as needed); its name there."""
        top = _safe_relative(name, f"input {slot!r}")
        with _Dir.open(self.work) as work, work.make_path(folder, self.user) as slot_dir:
            if not files:  # an empty folder
                slot_dir.make_path(top, self.user).close()
            for rel, write in files:
                target = _safe_relative(rel, f"input {slot!r}")
                try:
                    with slot_dir.make_path(target.parent, self.user) as parent:
                        parent.write_new(target.name, write, self.user)
                except StagingError:
                    raise
                except Exception as exc:
                    detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                    raise StagingError(f"input '{slot}' ({rel}) could not be staged: {detail}") from exc
        return top

    def make_folder(self, folder: PurePosixPath) -> None:
        """Make ``work/<folder>`` (and what leads to it) for the job's user, following no link."""
        with _Dir.open(self.work) as work, work.make_path(folder, self.user) as made:
            if self.user is None and os.geteuid() != 0:  # the container's user is no user of this host
                os.fchmod(made.fd, 0o777)

    # ------------------------------------------------------------------------------------- collecting

    def collect(self, folder: str = "output", wanted: Wanted | None = None) -> Collected:
        """Copy every regular file the job left in ``work/<folder>`` into ``collected`` (labcloud's own),
        with its size and SHA-256. Anything else is skipped and said so; nothing is followed or moved.
        ``wanted(path, is_folder)``: only the folders it says to enter and the files it says to keep."""
        shutil.rmtree(self.collected, ignore_errors=True)  # a crash during an earlier collection
        os.mkdir(self.collected, 0o700)
        found = Collected()
        real_work = os.path.realpath(self.work) + os.sep
        try:
            with _Dir.open(self.work) as work:  # (closed: a folder left open is a descriptor per job)
                root = work.enter(folder)
        except _NotADirectory:
            found.refused = (
                "the output folder was replaced by something that is not a folder; nothing was kept"
            )
            return found
        except FileNotFoundError:
            found.refused = "the job removed its output folder; nothing was kept"
            return found
        with root:
            self._walk(root, PurePosixPath(), 0, found, real_work, wanted)
        return found

    def _walk(
        self,
        folder: _Dir,
        rel: PurePosixPath,
        depth: int,
        found: Collected,
        real_work: str,
        wanted: Wanted | None = None,
    ) -> None:
        for name, info in folder.entries():
            if wanted is not None and not wanted(rel / name, stat.S_ISDIR(info.st_mode)):
                continue
            if found.seen >= MAX_OUTPUT_ENTRIES:
                found.skip(f"more than {MAX_OUTPUT_ENTRIES} files and folders; the rest was not kept")
                return
            found.seen += 1
            path = rel / name
            if not _good_name(name):
                found.skip(f"'{_printable(str(path))}': a name that is not valid UTF-8 text")
                continue
            if stat.S_ISDIR(info.st_mode):
                if depth >= MAX_OUTPUT_DEPTH:
                    found.skip(f"'{path}': folders nested deeper than {MAX_OUTPUT_DEPTH}")
                    continue
                try:
                    sub = folder.enter(name, expect=info)
                except (OSError, _NotADirectory):
                    found.skip(f"'{path}': changed while it was being collected")
                    continue
                with sub:
                    if not sub.real().startswith(real_work):
                        found.skip(f"'{path}': lies outside the job's folder")
                        continue
                    self._walk(sub, path, depth + 1, found, real_work, wanted)
            elif stat.S_ISREG(info.st_mode):
                problem = self._copy(folder, name, info, path, found, real_work)
                if problem:
                    found.skip(f"'{path}': {problem}")
            else:
                found.skip(f"'{path}': {_kind(info.st_mode)}, not a file (not followed)")

    def _copy(
        self, folder: _Dir, name: str, info: os.stat_result, path: PurePosixPath, found: Collected, real: str
    ) -> str | None:
        if info.st_nlink != 1:
            return "a hard link (only files the job wrote itself are kept)"
        if self.user is not None and info.st_uid != self.user.uid:
            return "not written by the job"
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder.fd)
        except OSError as exc:
            return f"cannot be read ({exc.strerror})"
        try:
            now = os.fstat(fd)
            if not stat.S_ISREG(now.st_mode) or (now.st_dev, now.st_ino) != (info.st_dev, info.st_ino):
                return "changed while it was being collected"
            if not os.path.realpath(f"/proc/self/fd/{fd}").startswith(real):
                return "lies outside the job's folder"
            target = self.collected / f"{len(found.files):06d}"
            digest = hashlib.sha256()
            size = 0
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            try:
                while chunk := os.read(fd, COPY_CHUNK):
                    digest.update(chunk)
                    os.write(out, chunk)
                    size += len(chunk)
            finally:
                os.close(out)
        finally:
            os.close(fd)
        found.files.append(CollectedFile(path.as_posix(), target, size, digest.hexdigest()))
        return None


@dataclass(frozen=True)
class CollectedFile:
    rel: str  # its path under the output folder
    copy: Path  # labcloud's own copy
    size: int
    sha256: str


@dataclass
class Collected:
    files: list[CollectedFile] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    refused: str | None = None  # the output folder itself was unusable
    seen: int = 0

    def skip(self, note: str) -> None:
        if len(self.skipped) < 1000:
            self.skipped.append(note)

    def summary(self) -> str | None:
        """What was not kept, in a few words for the job's message (None: everything was)."""
        if self.refused:
            return self.refused
        if not self.skipped:
            return None
        shown = "; ".join(self.skipped[:3])
        more = f" and {len(self.skipped) - 3} more" if len(self.skipped) > 3 else ""
        entries = "entry" if len(self.skipped) == 1 else "entries"
        return f"{len(self.skipped)} output {entries} not kept: {shown}{more}"


# --- folders held open -----------------------------------------------------------------------------------


class _NotADirectory(Exception):
    pass


class _Dir:
    """An open folder: names are looked up in it, never through a path from the root."""

    def __init__(self, fd: int) -> None:
        self.fd = fd

    @classmethod
    def open(cls, path: Path) -> _Dir:
        """A folder labcloud made itself (the attempt's work folder), opened without following a link."""
        try:
            return cls(os.open(path, _DIR_FLAGS))
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _NotADirectory(str(path)) from None
            raise

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def enter(self, name: str, expect: os.stat_result | None = None) -> _Dir:
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _NotADirectory(name) from None
            raise
        if expect is not None:
            now = os.fstat(fd)
            if (now.st_dev, now.st_ino) != (expect.st_dev, expect.st_ino):
                os.close(fd)
                raise _NotADirectory(name)
        return _Dir(fd)

    def entries(self) -> Iterator[tuple[str, os.stat_result]]:
        """(name, lstat) of each entry, by name."""
        with os.scandir(self.fd) as it:
            names = sorted(e.name for e in it)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                yield name, os.stat(name, dir_fd=self.fd, follow_symlinks=False)

    def real(self) -> str:
        return os.path.realpath(f"/proc/self/fd/{self.fd}") + os.sep

    def make_path(self, rel: PurePosixPath, user: JobUser | None) -> _Dir:
        """Enter ``rel`` below this folder, creating each missing folder (never following a link)."""
        current = _Dir(os.dup(self.fd))
        for part in rel.parts:
            try:
                os.mkdir(part, 0o755, dir_fd=current.fd)
                if user is not None:
                    os.chown(part, user.uid, user.gid, dir_fd=current.fd, follow_symlinks=False)
            except FileExistsError:
                pass
            try:
                nxt = current.enter(part)
            except _NotADirectory:
                current.close()
                raise StagingError(f"'{rel}' cannot be staged: '{part}' is not a folder") from None
            current.close()
            current = nxt
        return current

    def write_new(self, name: str, write: Writer, user: JobUser | None) -> None:
        fd = os.open(
            name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=self.fd
        )
        if user is not None:
            os.fchown(fd, user.uid, user.gid)
        with os.fdopen(fd, "wb") as fh:
            write(fh)


def _safe_relative(path: str, what: str) -> PurePosixPath:
    """A relative path that stays inside its folder (from the server or a worker's assignment)."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\x00" in path or not pure.parts:
        raise StagingError(f"{what}: refusing the path {path!r}")
    return pure


def _good_name(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or c in "\x7f\\" for c in name)


def _printable(text: str) -> str:
    return text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")


def _kind(mode: int) -> str:
    if stat.S_ISLNK(mode):
        return "a symbolic link"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a regular file"
