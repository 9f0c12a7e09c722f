"""The headers of tus 1.0.0 (https://tus.io/protocols/resumable-upload): what a client sends, parsed and
checked; what the server answers, formatted; and the route class that adds ``Tus-Resumable`` to every
answer and shapes its errors as tus wants them. The upload itself is :mod:`labcloud.services.uploads`.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any
from urllib.parse import quote

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute

from labcloud.errors import InvalidInput, LabcloudError, NotFound
from labcloud.http.problems import PROBLEM_JSON, TYPE_BASE
from labcloud.services import uploads
from labcloud.settings import Settings

TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = ("creation", "creation-with-upload", "termination", "checksum", "expiration")
OFFSET_CONTENT_TYPE = "application/offset+octet-stream"
METADATA_LOC: list[str | int] = ["header", "upload-metadata"]
MAX_METADATA_KEYS = 32


# ------------------------------------------------------------------------------------------------ errors


class BadUploadRequest(InvalidInput):
    """A tus request whose headers are missing or malformed (tus answers 400, naming the header)."""

    status, title, type_slug = 400, "Bad request", "bad-upload-request"


class UnsupportedVersion(LabcloudError):
    status, title, type_slug = 412, "Precondition failed", "tus-version"

    def __init__(self, detail: str) -> None:
        super().__init__(detail, headers={"Tus-Version": TUS_VERSION})


class UnsupportedMediaType(LabcloudError):
    status, title, type_slug = 415, "Unsupported media type", "unsupported-media-type"


def _bad(loc: list[str | int], msg: str) -> BadUploadRequest:
    return BadUploadRequest(msg, errors=[{"loc": loc, "msg": msg}])


def problem(exc: LabcloudError) -> Response:
    """problem+json for any status, including tus's 460 (which ``http.HTTPStatus`` does not know). Input
    the upload service refuses is a bad request to tus (400); a wrong offset says the right one."""
    if isinstance(exc, InvalidInput) and not isinstance(exc, BadUploadRequest):
        exc = BadUploadRequest(exc.detail, errors=exc.errors, headers=exc.headers)
    headers = dict(exc.headers)
    if isinstance(exc, uploads.OffsetMismatch):
        headers["Upload-Offset"] = str(exc.offset)
    body: dict[str, Any] = {
        "type": TYPE_BASE + exc.type_slug,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
    }
    if exc.errors is not None:
        body["errors"] = exc.errors
    return JSONResponse(body, status_code=exc.status, media_type=PROBLEM_JSON, headers=headers)


class TusRoute(APIRoute):
    """Adds ``Tus-Resumable`` to every answer, errors (also the authentication's) included."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def tus_handler(request: Request) -> Response:
            try:
                response = await handler(request)
            except LabcloudError as exc:
                response = problem(exc)
            response.headers["Tus-Resumable"] = TUS_VERSION
            response.headers["Cache-Control"] = "no-store"
            return response

        return tus_handler


# ------------------------------------------------------------------------------------------------ requests


def check_version(header: str | None) -> None:
    """Every request but OPTIONS names the protocol version it speaks in ``Tus-Resumable``."""
    if header is None:
        raise UnsupportedVersion(
            f"Send 'Tus-Resumable: {TUS_VERSION}'; this server speaks tus {TUS_VERSION}."
        )
    if header.strip() != TUS_VERSION:
        raise UnsupportedVersion(
            f"tus {header.strip()!r} is not supported; this server speaks {TUS_VERSION}."
        )


def _non_negative(header: str | None, name: str) -> int:
    loc: list[str | int] = ["header", name]
    if header is None:
        raise _bad(loc, f"the {name} header is required")
    text = header.strip()
    if not text.isdigit() or len(text) > 19:
        raise _bad(loc, f"{name} must be a non-negative integer")
    return int(text)


def parse_length(header: str | None, defer: str | None = None) -> int:
    if header is None and defer is not None:
        raise _bad(
            ["header", "upload-defer-length"], "deferred lengths are not supported; send Upload-Length"
        )
    return _non_negative(header, "upload-length")


def parse_offset(header: str | None) -> int:
    return _non_negative(header, "upload-offset")


def parse_content_length(header: str | None) -> int | None:
    return None if header is None else _non_negative(header, "content-length")


def parse_metadata(header: str | None) -> dict[str, str]:
    """``key base64,key2 base64,key3`` → ``{key: text}``. Values must be UTF-8."""
    meta: dict[str, str] = {}
    if header is None or not header.strip():
        return meta
    for pair in header.split(","):
        pieces = pair.strip().split(" ")
        key = pieces[0]
        if not key or len(pieces) > 2 or not key.isascii() or not key.isprintable():
            raise _bad(METADATA_LOC, "write it as comma-separated 'key base64value' pairs")
        if key in meta:
            raise _bad([*METADATA_LOC, key], f"the key '{key}' is given twice")
        try:
            raw = base64.b64decode(pieces[1], validate=True) if len(pieces) == 2 else b""
            meta[key] = raw.decode("utf-8")
        except (binascii.Error, ValueError):
            raise _bad([*METADATA_LOC, key], "the value is not base64-encoded UTF-8 text") from None
    if len(meta) > MAX_METADATA_KEYS:
        raise _bad(METADATA_LOC, f"at most {MAX_METADATA_KEYS} keys")
    return meta


def destination(meta: dict[str, str]) -> tuple[str, list[str | int]]:
    """Where the file goes, as the metadata names it (``path``, else ``filename``), and where it said so."""
    if "path" in meta:
        return meta["path"], [*METADATA_LOC, "path"]
    if "filename" in meta:
        return meta["filename"], [*METADATA_LOC, "filename"]
    raise _bad(METADATA_LOC, "name the destination with a 'path' (or 'filename') key")


def parse_checksum(header: str | None) -> uploads.Checksum | None:
    """``Upload-Checksum: <algorithm> <base64 digest>``."""
    if header is None:
        return None
    loc: list[str | int] = ["header", "upload-checksum"]
    algorithm, _, encoded = header.strip().partition(" ")
    algorithm = algorithm.lower()
    if algorithm not in uploads.CHECKSUMS:
        raise _bad(loc, f"'{algorithm}' is not supported; use one of {', '.join(uploads.CHECKSUMS)}")
    try:
        digest = base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise _bad(loc, "the digest is not base64") from None
    size = uploads.CHECKSUMS[algorithm]().digest_size
    if len(digest) != size:
        raise _bad(loc, f"a {algorithm} digest is {size} bytes, not {len(digest)}")
    return uploads.Checksum(algorithm, digest)


def parse_id(raw: str) -> uuid.UUID:
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise NotFound(f"You have no upload {raw}.") from None


def has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    if length is not None:
        return length.strip() not in ("", "0")
    return "chunked" in request.headers.get("transfer-encoding", "").lower()


def is_offset_stream(request: Request) -> bool:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    return kind == OFFSET_CONTENT_TYPE


# ------------------------------------------------------------------------------------------------ answers


def http_date(moment: datetime) -> str:
    """RFC 7231 IMF-fixdate, as ``Upload-Expires`` wants it."""
    return format_datetime(moment.astimezone(UTC), usegmt=True)


def encode_metadata(meta: dict[str, str]) -> str:
    return ",".join(
        f"{key} {base64.b64encode(value.encode()).decode()}" if value else key for key, value in meta.items()
    )


def capabilities(settings: Settings) -> dict[str, str]:
    """The answer to OPTIONS: what this server supports."""
    return {
        "Tus-Version": TUS_VERSION,
        "Tus-Extension": ",".join(TUS_EXTENSIONS),
        "Tus-Max-Size": str(settings.max_upload_bytes),
        "Tus-Checksum-Algorithm": ",".join(uploads.CHECKSUMS),
    }


def created_headers(location: str, info: uploads.UploadInfo) -> dict[str, str]:
    return {"Location": location, "Upload-Offset": "0", "Upload-Expires": http_date(info.expires_at)}


def offset_headers(info: uploads.UploadInfo) -> dict[str, str]:
    """The answer to HEAD: where to resume, and what the upload is."""
    headers = {
        "Upload-Offset": str(info.offset),
        "Upload-Length": str(info.length),
        "Upload-Expires": http_date(info.expires_at),
    }
    if info.meta:
        headers["Upload-Metadata"] = encode_metadata(info.meta)
    return headers


def written_headers(result: uploads.Written) -> dict[str, str]:
    """The answer to a chunk: the new offset, and the file once it is published (``Labcloud-File-*``)."""
    headers = {"Upload-Offset": str(result.offset)}
    if result.entry is not None:
        headers["Labcloud-File-Path"] = quote(result.entry.path, safe="/")
        headers["Labcloud-File-Size"] = str(result.entry.size)
        headers["Labcloud-File-Sha256"] = result.entry.sha256 or ""
    elif result.expires_at is not None:
        headers["Upload-Expires"] = http_date(result.expires_at)
    return headers
