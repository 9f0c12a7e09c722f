"""A zip built while it is sent: memory stays at one chunk whatever the size of the folder."""

from __future__ import annotations

import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime

CHUNK = 1 << 20


@dataclass
class ZipMember:
    name: str  # path inside the archive
    modified_at: datetime
    chunks: Callable[[], Iterator[bytes]]


class _Sink:
    """A write-only, unseekable file for zipfile that hands out what was written so far."""

    def __init__(self) -> None:
        self.buffer = bytearray()
        self.position = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        self.position += len(data)
        return len(data)

    def tell(self) -> int:
        return self.position

    def flush(self) -> None:
        pass

    def drain(self) -> bytes:
        data = bytes(self.buffer)
        self.buffer.clear()
        return data


def zip_stream(members: Iterable[ZipMember]) -> Iterator[bytes]:
    """Members are stored, not compressed: research data rarely shrinks, and storing runs at disk speed."""
    sink = _Sink()
    with zipfile.ZipFile(sink, "w", compression=zipfile.ZIP_STORED) as zf:  # type: ignore[call-overload]
        for member in members:
            info = zipfile.ZipInfo(member.name, date_time=_zip_time(member.modified_at))
            info.compress_type = zipfile.ZIP_STORED
            info.external_attr = 0o644 << 16
            with zf.open(info, "w", force_zip64=True) as dest:
                for chunk in member.chunks():
                    dest.write(chunk)
                    if len(sink.buffer) >= CHUNK:
                        yield sink.drain()
            yield sink.drain()
    yield sink.drain()


def _zip_time(at: datetime) -> tuple[int, int, int, int, int, int]:
    at = at.astimezone()
    if at.year < 1980:
        return (1980, 1, 1, 0, 0, 0)
    return (at.year, at.month, at.day, at.hour, at.minute, at.second)
