"""What the blocking and the asynchronous connection share: the server's address and token, how a request
is addressed and its answer read, and how an upload is set up."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import httpx

from labcloud.client import calls
from labcloud.client.config import UPLOAD_CHUNK, UPLOAD_RETRIES, normalise_server
from labcloud.client.errors import ClientError, Unreachable, check_options
from labcloud.client.uploads import Progress, ResumableUpload, UploadOptions

API = "/api/v1"
USER_AGENT = "labcloud-client"


class ConnectionBase:
    """What both connections share: the server's address, the token, and how a request is addressed."""

    def __init__(self, base_url: str, token: str | None = None, *, timeout: float = 30.0) -> None:
        self.base_url = normalise_server(base_url)
        self.token = token
        self.timeout = timeout

    def _client_options(self) -> dict[str, Any]:
        return {
            "base_url": self.base_url,
            "timeout": httpx.Timeout(self.timeout, connect=10.0),
            "headers": {"User-Agent": USER_AGENT, "Accept": "application/json"},
            "follow_redirects": False,
        }

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return headers

    def _unreachable(self, exc: httpx.HTTPError) -> ClientError:
        if isinstance(exc, httpx.TimeoutException):
            return Unreachable(0, f"the server at {self.base_url} did not answer in time")
        reason = str(exc) or type(exc).__name__
        return Unreachable(0, f"cannot reach the server at {self.base_url} ({reason})")

    @staticmethod
    def _url(path: str) -> str:
        """An API path below /api/v1, or an absolute URL the server gave out (an upload's Location)."""
        return path if path.startswith(("http://", "https://")) else API + path

    @staticmethod
    def _answer(call: calls.Call, response: httpx.Response) -> Any:
        if call.returns == "json":
            return response.json()
        if call.returns == "text":
            return response.text
        return response if call.returns == "response" else None

    @staticmethod
    def _file_info(wanted: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        if len(items) == 1 and items[0].get("path") == wanted and items[0].get("type") == "file":
            return dict(items[0])
        # a folder lists its children; say so without listing them
        return {"path": wanted, "type": "folder"}

    def _upload(
        self,
        local: Path,
        remote: str,
        on_progress: Progress | None,
        options: UploadOptions,
        cancel: threading.Event | None = None,
    ) -> ResumableUpload:
        check_options("upload", options, UploadOptions)
        return ResumableUpload(
            self.base_url,
            local,
            remote,
            on_progress,
            options.get("urls"),
            options.get("chunk_size", UPLOAD_CHUNK),
            options.get("retries", UPLOAD_RETRIES),
            options.get("on_note"),
            cancel,
        )


def unreadable(local: Path, exc: OSError) -> ClientError:
    """A local file that could not be read, as the failure of its upload."""
    return ClientError(0, f"cannot read {local}: {exc.strerror or exc}")
