"""Downloads, whichever connection makes them: a file never appears under its name before it is complete,
nothing is written outside the destination, and a file's bytes are checked against the server's SHA-256.
(No httpx here: the commands import this at start.)"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Generator
from pathlib import Path
from types import TracebackType
from typing import Any

from labcloud.client.errors import DownloadMismatch
from labcloud.client.steps import Download

CHUNK = 1 << 20  # bytes read or written at a time


class PartialFile:
    """Where a download is written: a temporary file beside ``dest``, renamed to ``dest`` by :meth:`commit`
    (so ``dest`` never holds a partial file) and removed when the download fails."""

    def __init__(self, dest: Path) -> None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        self.dest, self.tmp = dest, Path(name)
        self.fh = os.fdopen(fd, "wb")
        self.written = 0

    def write(self, chunk: bytes) -> None:
        self.fh.write(chunk)
        self.written += len(chunk)

    def commit(self) -> int:
        self.fh.close()
        os.chmod(self.tmp, 0o666 & ~_umask())  # mkstemp made it private; give it the usual mode
        os.replace(self.tmp, self.dest)
        return self.written

    def __enter__(self) -> PartialFile:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.fh.closed:
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


def inside(root: Path, relative: str) -> Path:
    """``root / relative``, refused when the server named a path outside ``root``."""
    target = root / relative
    if not target.resolve().is_relative_to(root.resolve()):
        raise DownloadMismatch(f"the server sent a path outside the destination: {relative}")
    return target


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(CHUNK):
            digest.update(block)
    return digest.hexdigest()


def check_download(target: Path, remote: str, expected: str | None) -> None:
    """A downloaded file must have the SHA-256 the server gave for it; otherwise it is removed."""
    if expected and sha256_of(target) != expected:
        target.unlink(missing_ok=True)
        raise DownloadMismatch(
            f"{remote}: the downloaded bytes do not match the server's SHA-256 {expected}; removed"
        )


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def downloading(
    items: list[dict[str, Any]],
    root: Path,
    address: Callable[[str], str],
    on_progress: Callable[[int], None] | None = None,
    on_file: Callable[[dict[str, Any]], None] | None = None,
) -> Generator[Download, int, list[dict[str, Any]]]:
    """Download each file of ``items`` (a job's outputs: ``{path, sha256, ...}``) from its ``address`` into
    ``root``, keeping its path, each checked by its SHA-256, as steps (:mod:`labcloud.client.steps`);
    ``{path, size, local}`` of each. ``on_file`` is told of each file before it is downloaded."""
    written: list[dict[str, Any]] = []
    for item in items:
        target = inside(root, item["path"])
        if on_file:
            on_file(item)
        size = yield Download(address(item["path"]), target, on_progress)
        check_download(target, item["path"], item.get("sha256"))
        written.append({"path": item["path"], "size": size, "local": str(target)})
    return written
