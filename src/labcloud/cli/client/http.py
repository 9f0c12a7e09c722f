"""A small synchronous client for the labcloud HTTP API (``/api/v1``), used by the ``labcloud`` commands.

It knows the paths, the bearer token and the error format, and nothing about terminals: every failure is a
:class:`ClientError` carrying the server's problem details (or a description of the network failure).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx

from labcloud.cli.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, normalise_server
from labcloud.cli.client.errors import ClientError, UploadMismatch
from labcloud.cli.client.uploading import (
    Note,
    Progress,
    ResumableUpload,
    UploadCancelled,
    UploadUrls,
    normalise_remote,
    upload_key,
)

__all__ = [
    "ClientError",
    "LabcloudClient",
    "SseEvent",
    "UploadCancelled",
    "UploadMismatch",
    "normalise_remote",
    "parse_sse",
    "upload_key",
]

API = "/api/v1"
CHUNK = 1 << 20
TUS = {"Tus-Resumable": "1.0.0"}


@dataclass
class SseEvent:
    """One server-sent event: its type, its ``data:`` lines and its ``id:`` (if any)."""

    event: str = "message"
    data: list[str] = field(default_factory=list)
    id: str | None = None


def parse_sse(lines: Iterable[str]) -> Iterator[SseEvent]:
    """Group the lines of a ``text/event-stream`` into events (a blank line ends one)."""
    current = SseEvent()
    seen = False
    for line in lines:
        if not line:
            if seen:
                yield current
            current, seen = SseEvent(), False
            continue
        if line.startswith(":"):
            continue  # comment / keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            current.event, seen = value, True
        elif name == "data":
            current.data.append(value)
            seen = True
        elif name == "id":
            current.id = value
    if seen:
        yield current


def quote_path(path: str) -> str:
    """A slash-separated path, each segment percent-encoded for use in a URL."""
    return quote(path.strip("/"), safe="/")


class LabcloudClient:
    """The HTTP API of one labcloud server, as one user (bearer ``token``, optional for login)."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = normalise_server(base_url)
        self.token = token
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=self.base_url,
            timeout=httpx.Timeout(timeout, connect=10.0),
            headers={"User-Agent": "labcloud-cli", "Accept": "application/json"},
            follow_redirects=False,
        )

    def close(self) -> None:
        self._http.close()

    def clone(self) -> LabcloudClient:
        """Another client for the same server and token (one per thread for parallel transfers)."""
        return LabcloudClient(self.base_url, self.token, timeout=self.timeout)

    def __enter__(self) -> LabcloudClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ plumbing

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _unreachable(self, exc: httpx.HTTPError) -> ClientError:
        if isinstance(exc, httpx.TimeoutException):
            return ClientError(0, f"the server at {self.base_url} did not answer in time")
        reason = str(exc) or type(exc).__name__
        return ClientError(0, f"cannot reach the server at {self.base_url} ({reason})")

    @staticmethod
    def _url(path: str) -> str:
        """An API path below /api/v1, or an absolute URL the server gave out (an upload's Location)."""
        return path if path.startswith(("http://", "https://")) else API + path

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """Send one request; any non-2xx answer or network failure raises :class:`ClientError`."""
        headers = self._headers(kwargs.pop("headers", None))
        try:
            response = self._http.request(method, self._url(path), headers=headers, **kwargs)
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc
        if response.is_error:
            raise ClientError.from_response(response)
        return response

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        return self.request(method, path, **kwargs).json()

    @contextlib.contextmanager
    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed response (no read timeout); errors are raised before the body is handed out.

        With ``follow_redirects=True`` a redirect to another origin (a presigned S3 URL) is followed
        without the Authorization header."""
        headers = self._headers(kwargs.pop("headers", None))
        timeout = httpx.Timeout(10.0, read=None)
        try:
            with self._http.stream(
                method, self._url(path), headers=headers, timeout=timeout, **kwargs
            ) as resp:
                if resp.is_error:
                    resp.read()
                    raise ClientError.from_response(resp)
                yield resp
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from exc

    def page(self, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One page of a cursor-paged listing: ``{"items": [...], "next_cursor": ...}``."""
        result: dict[str, Any] = self.json("GET", path, params=params)
        return result

    def pages(self, path: str, params: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paged listing, following ``next_cursor`` to the end."""
        query = {**params, "limit": 200}
        while True:
            page = self.page(path, query)
            yield from page.get("items", [])
            if not page.get("next_cursor"):
                return
            query["cursor"] = page["next_cursor"]

    # ------------------------------------------------------------------------------------------ account

    def login(self, email: str, password: str) -> str:
        """Log in with email and password; the short-lived token becomes this client's token."""
        body = self.json("POST", "/auth/login", data={"username": email, "password": password})
        self.token = str(body["access_token"])
        return self.token

    def create_token(self, name: str, scopes: list[str]) -> dict[str, Any]:
        """A personal API token; the secret (``token``) is only in this answer."""
        result: dict[str, Any] = self.json("POST", "/me/tokens", json={"name": name, "scopes": scopes})
        return result

    def revoke_token(self, token_id: str) -> None:
        self.request("DELETE", f"/me/tokens/{quote_path(token_id)}")

    def me(self) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", "/me")
        return result

    # ------------------------------------------------------------------------------------------ apps

    def apps(self) -> list[dict[str, Any]]:
        items: list[dict[str, Any]] = self.json("GET", "/apps").get("items", [])
        return items

    def app(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/apps/{quote_path(name)}")
        return result

    def app_images(self, name: str) -> dict[str, Any]:
        """Admin: the images of an app's container entrypoints, and which the server's engine holds."""
        result: dict[str, Any] = self.json("GET", f"/apps/{quote_path(name)}/images")
        return result

    def pull_images(self, name: str, version: str | None = None) -> dict[str, Any]:
        """Admin: pull the images of a version (the latest by default); waits as long as the pulls take."""
        body = {"version": version} if version else {}
        timeout = httpx.Timeout(self.timeout, read=None)
        path = f"/apps/{quote_path(name)}/pull"
        result: dict[str, Any] = self.json("POST", path, json=body, timeout=timeout)
        return result

    # ------------------------------------------------------------------------------------------ files

    def upload(
        self,
        local: Path,
        remote: str,
        on_progress: Progress | None = None,
        *,
        urls: UploadUrls | None = None,
        chunk_size: int = UPLOAD_CHUNK,
        retries: int = UPLOAD_RETRIES,
        on_note: Note | None = None,
        cancel: threading.Event | None = None,
    ) -> dict[str, Any]:
        """Upload a local file to ``remote`` in the user's space, resumably (tus); ``{path, size, sha256,
        local}`` of the stored file.

        The bytes go in PATCHes of ``chunk_size``, each with its checksum. After a network failure or a
        server error it waits (backing off), asks the server how much it holds and continues from there;
        ``retries`` failures in a row end it. With ``urls`` the upload's URL is remembered, so the same
        upload run again after a crash continues where it stopped. The server's SHA-256 of the stored file
        must equal the local one (:class:`UploadMismatch` otherwise).
        """
        run = ResumableUpload(self, local, remote, on_progress, urls, chunk_size, retries, on_note, cancel)
        return run.run()

    def tus_create(self, remote: str, size: int) -> httpx.Response:
        """Start a resumable upload of ``size`` bytes to ``remote``; its URL is the answer's Location."""
        meta = "path " + base64.b64encode(remote.encode()).decode()
        headers = {**TUS, "Upload-Length": str(size), "Upload-Metadata": meta}
        return self.request("POST", "/uploads", headers=headers)

    def tus_offset(self, url: str) -> int:
        """How many bytes of the upload at ``url`` the server holds."""
        return int(self.request("HEAD", url, headers=TUS).headers["Upload-Offset"])

    def tus_append(self, url: str, offset: int, data: bytes) -> httpx.Response:
        """Send ``data`` at ``offset``, with its SHA-256 for the server to check."""
        checksum = base64.b64encode(hashlib.sha256(data).digest()).decode()
        headers = {
            **TUS,
            "Content-Type": "application/offset+octet-stream",
            "Upload-Offset": str(offset),
            "Upload-Checksum": f"sha256 {checksum}",
        }
        # the last chunk's answer waits for the file to be stored: a generous read timeout
        timeout = httpx.Timeout(30.0, write=None, read=600.0)
        return self.request("PATCH", url, content=data, headers=headers, timeout=timeout)

    def tus_cancel(self, url: str) -> None:
        self.request("DELETE", url, headers=TUS)

    def file_info(self, path: str) -> dict[str, Any] | None:
        """The file at ``path`` of the user's space (``{path, type, size, sha256, ...}``), ``{path, type:
        "folder"}`` for a folder, None when there is nothing."""
        wanted = normalise_remote(path)
        try:
            items = self.page("/files", {"prefix": wanted, "limit": 1}).get("items", [])
        except ClientError as exc:
            if exc.status == 404:
                return None
            raise
        if len(items) == 1 and items[0].get("path") == wanted and items[0].get("type") == "file":
            return dict(items[0])
        # a folder lists its children; say so without listing them
        return {"path": wanted, "type": "folder"}

    def files(self, prefix: str = "") -> Iterator[dict[str, Any]]:
        return self.pages("/files", {"prefix": prefix} if prefix else {})

    # ------------------------------------------------------------------------------------------ jobs

    def submit(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", "/jobs", json=body)
        return result

    def jobs(self, params: dict[str, Any], limit: int | None = None) -> dict[str, Any]:
        """Your jobs, newest first: one page of ``limit`` (at most 200), or all of them (``limit=None``)."""
        if limit is None:
            return {"items": list(self.pages("/jobs", params)), "next_cursor": None}
        return self.page("/jobs", {**params, "limit": limit})

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("GET", f"/jobs/{quote_path(job_id)}")
        return result

    def events(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json("GET", f"/jobs/{quote_path(job_id)}/events")
        return result

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/jobs/{quote_path(job_id)}/cancel")
        return result

    def rerun(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self.json("POST", f"/jobs/{quote_path(job_id)}/rerun")
        return result

    def log(self, job_id: str) -> str:
        return self.request("GET", f"/jobs/{quote_path(job_id)}/logs", headers={"Accept": "text/plain"}).text

    def follow_log(self, job_id: str, reconnects: int = 5) -> Iterator[SseEvent]:
        """The live log as server-sent events, ending with the ``end`` event. A dropped connection is
        resumed where it stopped (the event ids are byte offsets into the log)."""
        offset = 0
        failures = 0
        while True:
            try:
                with self.stream(
                    "GET",
                    f"/jobs/{quote_path(job_id)}/logs",
                    params={"follow": "true", "offset": offset},
                    headers={"Accept": "text/event-stream"},
                ) as resp:
                    for event in parse_sse(resp.iter_lines()):
                        failures = 0
                        if event.id and event.id.isdigit():
                            offset = int(event.id)
                        yield event
                        if event.event == "end":
                            return
            except ClientError as exc:
                if exc.status != 0 or failures >= reconnects:
                    raise
            else:  # the stream closed without an end event
                if failures >= reconnects:
                    raise ClientError(0, "the log stream kept closing before the job ended")
            failures += 1
            time.sleep(min(5.0, 0.5 * 2**failures))  # then ask again from where it stopped

    def outputs(self, job_id: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.json("GET", f"/jobs/{quote_path(job_id)}/outputs")
        return result

    def download(self, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        """Stream ``GET {path}`` into ``dest``, through a temporary file beside it that is renamed when
        complete, so ``dest`` never holds a partial file. Returns the number of bytes."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
        tmp = Path(tmp_name)
        written = 0
        try:
            with (
                os.fdopen(fd, "wb") as fh,
                self.stream("GET", path, headers={"Accept": "*/*"}, follow_redirects=True) as resp,
            ):
                for chunk in resp.iter_bytes(CHUNK):
                    fh.write(chunk)
                    written += len(chunk)
                    if on_progress:
                        on_progress(len(chunk))
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it private; give it the usual mode
            os.replace(tmp, dest)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return written

    def download_file(self, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        """A file of the user's space, or a folder as a zip."""
        return self.download(f"/files/{quote_path(path)}", dest, on_progress)

    def download_output(self, job_id: str, path: str, dest: Path, on_progress: Progress | None = None) -> int:
        return self.download(f"/jobs/{quote_path(job_id)}/outputs/{quote_path(path)}", dest, on_progress)

    def download_zip(self, job_id: str, dest: Path, on_progress: Progress | None = None) -> int:
        return self.download(f"/jobs/{quote_path(job_id)}/outputs.zip", dest, on_progress)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
