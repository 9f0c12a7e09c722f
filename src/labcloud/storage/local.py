"""The store on the server's own disk: one file per object under ``$LABCLOUD_HOME/files``."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from labcloud.storage.base import Storage

CHUNK = 1 << 20


class LocalStorage(Storage):
    kind = "local"

    def __init__(self, root: Path) -> None:
        self.root = root

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if len(parts) != 3 or not all(p and p.isalnum() for p in parts):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root.joinpath(*parts)

    def put_file(self, key: str, source: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.replace(source, target)  # same file system: the bytes never move
        except OSError:
            tmp = target.with_name(target.name + ".part")
            shutil.copyfile(source, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, target)
            source.unlink()

    def delete(self, keys: list[str]) -> None:
        for key in keys:
            self._path(key).unlink(missing_ok=True)

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        with open(self._path(key), "rb") as fh:
            fh.seek(start)
            remaining = None if end is None else max(0, end - start)
            while remaining is None or remaining > 0:
                chunk = fh.read(CHUNK if remaining is None else min(CHUNK, remaining))
                if not chunk:
                    return
                if remaining is not None:
                    remaining -= len(chunk)
                yield chunk

    def fetch(self, key: str, dest: BinaryIO) -> None:
        with open(self._path(key), "rb") as src:
            shutil.copyfileobj(src, dest, CHUNK)

    def local_path(self, key: str) -> Path | None:
        return self._path(key)

    def iter_keys(self, older_than: datetime) -> Iterator[str]:
        limit = older_than.timestamp()
        if not self.root.is_dir():
            return
        for first in sorted(self.root.iterdir()):
            if not first.is_dir() or first.is_symlink():
                continue
            for second in sorted(first.iterdir()):
                if not second.is_dir() or second.is_symlink():
                    continue
                for entry in os.scandir(second):
                    ok = entry.is_file(follow_symlinks=False) and entry.name.isalnum()
                    if ok and entry.stat().st_mtime < limit:
                        yield f"{first.name}/{second.name}/{entry.name}"

    def check(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if not os.access(self.root, os.W_OK):
            raise OSError(f"the storage folder {self.root} is not writable")
