"""Previews of job outputs: images shown inline, the first rows of a CSV as a table, the head of a text."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from labcloud.db.models import FileEntry
from labcloud.storage.base import Storage

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".gif", ".webp"}  # not SVG: it can carry scripts
TABLE_SUFFIXES = {".csv": ",", ".tsv": "\t"}
TEXT_SUFFIXES = {".txt", ".json", ".log", ".md", ".yaml", ".yml", ".out", ".err"}
HEAD_BYTES = 16 * 1024
TABLE_ROWS = 10
MAX_PREVIEWS = 8


@dataclass
class Preview:
    kind: str  # image | table | text
    rows: list[list[str]] = field(default_factory=list)
    text: str = ""
    truncated: bool = False


def _head(storage: Storage, row: FileEntry) -> tuple[str, bool]:
    data = b"".join(storage.iter_bytes(row.blob_key or "", 0, HEAD_BYTES))
    truncated = row.size > len(data)
    return data.decode("utf-8", errors="replace"), truncated


def preview(storage: Storage, row: FileEntry) -> Preview | None:
    suffix = PurePosixPath(row.name).suffix.lower()
    if suffix in IMAGE_SUFFIXES:
        return Preview("image")
    if suffix in TABLE_SUFFIXES:
        text, truncated = _head(storage, row)
        lines = text.splitlines()
        if truncated and lines:
            lines = lines[:-1]  # the last line may be cut short
        rows = list(
            csv.reader(io.StringIO("\n".join(lines[: TABLE_ROWS + 1])), delimiter=TABLE_SUFFIXES[suffix])
        )
        return Preview("table", rows=rows, truncated=truncated or len(lines) > TABLE_ROWS + 1)
    if suffix in TEXT_SUFFIXES:
        text, truncated = _head(storage, row)
        return Preview("text", text=text, truncated=truncated)
    return None


def previews(storage: Storage, rows: list[FileEntry]) -> dict[str, Preview]:
    """Previews by path for the first few outputs that have one; an unreadable one is left out."""
    found: dict[str, Preview] = {}
    for row in rows:
        if len(found) >= MAX_PREVIEWS:
            break
        try:
            item = preview(storage, row)
        except Exception:  # a missing object must not break the job page
            item = None
        if item is not None:
            found[row.path] = item
    return found
