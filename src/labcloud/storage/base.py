"""The blob store behind every user's file space.

Objects are immutable and live under opaque keys chosen by labcloud; the database's file index maps each
user's paths to keys. So a rename or a folder move never touches the bytes, a replaced file is a new
object, and the store never sees a user-supplied path.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO

from labcloud.db.types import new_id
from labcloud.errors import Conflict


class DirectUploadUnsupported(Conflict):
    """The store takes no uploads that bypass the server (local disk)."""


@dataclass(frozen=True)
class PartUrl:
    part_number: int
    url: str


class Storage(ABC):
    """What the file service needs of a store. Implementations: ``local`` and ``s3``."""

    kind: str

    @staticmethod
    def new_key() -> str:
        """A fresh, time-ordered key, fanned out over folders: ``ab/cd/<32 hex>``."""
        hex_id = new_id().hex
        return f"{hex_id[-2:]}/{hex_id[-4:-2]}/{hex_id}"

    # -- writing -----------------------------------------------------------------------------------------
    @abstractmethod
    def put_file(self, key: str, source: Path) -> None:
        """Store the complete local file ``source`` as ``key``, consuming it (it is gone afterwards).

        Atomic: readers see the whole object or none. Local disk renames when it can.
        """

    @abstractmethod
    def delete(self, keys: list[str]) -> None:
        """Remove objects; missing keys are not an error."""

    # -- reading -----------------------------------------------------------------------------------------
    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        """The object's bytes from ``start`` up to ``end`` (exclusive; None = to the end), in chunks."""

    @abstractmethod
    def fetch(self, key: str, dest: BinaryIO) -> None:
        """Write the object's bytes into ``dest``, a file open for writing (a job's private copy)."""

    def local_path(self, key: str) -> Path | None:
        """The object's file when the store is a local disk (served directly, with Range); else None."""
        return None

    def presigned_get(
        self, key: str, filename: str, expires_s: int, inline_as: str | None = None
    ) -> str | None:
        """A short-lived URL that downloads the object as ``filename`` (or, with ``inline_as``, shows it in
        the browser as that media type); None when the store has none."""
        return None

    # -- uploads that bypass the server (S3 multipart with presigned part URLs) -------------------------
    def start_multipart(self, key: str) -> str:
        """Begin a multipart upload of ``key``; returns the store's upload id."""
        raise DirectUploadUnsupported(
            "Direct uploads need S3-compatible storage; this server keeps files on its own disk. "
            "Use the resumable upload endpoint /api/v1/uploads (tus) instead."
        )

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        raise DirectUploadUnsupported("Direct uploads need S3-compatible storage.")

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        """Join the uploaded parts ((part_number, etag), ascending) into the object ``key``."""
        raise DirectUploadUnsupported("Direct uploads need S3-compatible storage.")

    def abort_multipart(self, key: str, upload_id: str) -> None:
        raise DirectUploadUnsupported("Direct uploads need S3-compatible storage.")

    # -- housekeeping ------------------------------------------------------------------------------------
    @abstractmethod
    def iter_keys(self, older_than: datetime) -> Iterator[str]:
        """Every key last written before ``older_than`` (to find objects no index row refers to)."""

    def check(self) -> None:  # noqa: B027 - optional hook
        """Raise if the store cannot be reached or written (used by /readyz and at start)."""
