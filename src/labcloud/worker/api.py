"""The worker API as seen from a worker: one pooled HTTP client, retries with backoff, and the answers
that mean "stop" (a revoked worker token, a job that is no longer ours) turned into exceptions.

Every call is retried on network failures and on answers that say "try again" (408, 425, 429, 5xx) with
exponential backoff (capped at :data:`BACKOFF_CAP_S`, with jitter), until it succeeds, until the caller's
``until`` event is set, or (only where the caller asks for it) after a number of tries.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple
from urllib.parse import quote, urlsplit

import httpx

from labcloud import __version__

log = logging.getLogger(__name__)

API = "/api/v1/worker"
BACKOFF_BASE_S = 0.25
BACKOFF_CAP_S = 10.0
RETRY_STATUSES = frozenset({408, 425, 429, 500, 502, 503, 504})
FENCED_TYPE = "/fenced"
CHUNK = 1 << 20
MAX_MISMATCHES = 3  # downloads that arrive different from what was announced, before giving up
# An idle connection is kept this long: past the heartbeat interval (at most 10 s), so heartbeats reuse it,
# and short of the server's keep-alive (http_keep_alive_s, 65 s), so the server does not close it first.
KEEP_ALIVE_S = 30.0


class Backoff:
    """Exponential delays with "equal jitter": the n-th is uniform in [d/2, d], d = min(cap, base·2ⁿ)."""

    def __init__(
        self,
        base: float = BACKOFF_BASE_S,
        cap: float = BACKOFF_CAP_S,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.base, self.cap, self.rng = base, cap, rng
        self.failures = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2 ** min(self.failures, 30))
        self.failures += 1
        return delay / 2 + self.rng() * delay / 2

    def reset(self) -> None:
        self.failures = 0


class WorkerApiError(Exception):
    """An answer that retrying will not change (4xx); ``status`` 0 when the server was never reached."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


class TokenRejected(WorkerApiError):
    """401 on a worker call: the worker token is wrong or was revoked."""


class Fenced(WorkerApiError):
    """The job is no longer this worker's (409 ``fenced``, or its job token is refused): kill, forget."""


class Unreachable(WorkerApiError):
    """The server did not answer (usefully) within the tries the caller allowed."""


class Abandoned(Exception):
    """The caller's ``until`` event was set while the call was being retried."""


def problem_detail(response: httpx.Response) -> tuple[str, str]:
    """(problem type, detail) of an error answer, whatever its shape."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        detail = body.get("detail")
        return str(body.get("type") or ""), str(
            detail if isinstance(detail, str) else body.get("title") or ""
        )
    text = response.text.strip().splitlines()[0][:200] if response.text.strip() else ""
    return "", text or response.reason_phrase


def describe(exc: httpx.HTTPError) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return f"no answer in time ({type(exc).__name__})"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _pause(delay: float, until: threading.Event | None, what: str) -> None:
    """Wait ``delay`` seconds before the next try; :class:`Abandoned` as soon as ``until`` is set."""
    if until is None:
        time.sleep(delay)
    elif until.wait(delay):
        raise Abandoned(what)


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def quote_path(path: str) -> str:
    return quote(path.strip("/"), safe="/")


def file_chunks(path: Path, digest: Any = None, chunk: int = CHUNK) -> Iterator[bytes]:
    """A file's bytes in chunks, read as they are sent (never the whole file in memory)."""
    with open(path, "rb") as fh:
        while data := fh.read(chunk):
            if digest is not None:
                digest.update(data)
            yield data


class WorkerApi:
    """The server's worker API over one pooled, thread-safe HTTP client."""

    def __init__(
        self,
        server: str,
        *,
        timeout: float = 30.0,
        max_connections: int = 64,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        server = server.strip().rstrip("/")
        if "://" not in server:
            server = "http://" + server
        self.server = server
        self.timeout = timeout
        self._http = httpx.Client(
            base_url=server,
            timeout=httpx.Timeout(timeout, connect=10.0, pool=None),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEP_ALIVE_S,
            ),
            headers={"User-Agent": f"labcloud-worker/{__version__}", "Accept": "application/json"},
            follow_redirects=False,
            transport=transport,
        )

    def close(self) -> None:
        self._http.close()

    def same_origin(self, url: str) -> bool:
        a, b = urlsplit(url), urlsplit(self.server)
        return (a.scheme, a.netloc) == (b.scheme, b.netloc)

    # ------------------------------------------------------------------------------------- requests

    def call(
        self,
        method: str,
        path: str,
        *,
        token: str | None,
        job_call: bool = False,
        until: threading.Event | None = None,
        tries: int | None = None,
        accept: Iterable[int] = (),
        timeout: float | httpx.Timeout | None = None,
        json: Any = None,
        body: bytes | Callable[[], Iterable[bytes]] | None = None,
        headers: dict[str, str] | None = None,
        what: str = "",
    ) -> httpx.Response:
        """Send a request until it gets an answer worth returning.

        ``path`` is below ``/api/v1/worker`` unless it starts with ``/api/`` or is absolute. ``body`` may be
        a factory of an iterable (called afresh for every try). Statuses in ``accept`` are returned as they
        are; other errors raise :class:`TokenRejected` (401 on a worker call), :class:`Fenced` (409
        ``fenced``, or 401 on a job call) or :class:`WorkerApiError`. Network failures and retryable answers
        are retried with backoff: forever, or ``tries`` times (then :class:`Unreachable`), or until
        ``until`` is set (then :class:`Abandoned`).
        """
        url = path if path.startswith(("http://", "https://", "/api/")) else API + path
        accepted = frozenset(accept)
        backoff = Backoff()
        attempt = 0
        what = what or f"{method} {url.split('?')[0]}"
        while True:
            if until is not None and until.is_set():
                raise Abandoned(what)
            attempt += 1
            retry_after = 0.0
            try:
                content = body() if callable(body) else body
                response = self._http.request(
                    method,
                    url,
                    json=json,
                    content=content,
                    headers={**bearer(token), **(headers or {})},
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                problem = describe(exc)
            else:
                status = response.status_code
                if status < 400:
                    return response
                kind, detail = problem_detail(response)
                if status == 409 and kind.endswith(FENCED_TYPE):
                    raise Fenced(status, detail)
                if status in accepted:
                    return response
                if status == 401:
                    raise (Fenced if job_call else TokenRejected)(status, detail)
                if status not in RETRY_STATUSES:
                    raise WorkerApiError(status, detail)
                problem = f"{status} {detail}".strip()
                retry_after = _retry_after(response)
            if tries is not None and attempt >= tries:
                raise Unreachable(0, f"{what}: {problem}")
            delay = max(backoff.next(), min(retry_after, 60.0))
            if attempt == 1 or attempt % 5 == 0:
                log.warning("%s failed (%s); retrying in %.1f s (try %d)", what, problem, delay, attempt)
            _pause(delay, until, what)

    def json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.call(method, path, **kwargs)
        return response.json() if response.content else None

    # ------------------------------------------------------------------------------------- transfers

    def download(
        self,
        url: str,
        target: BinaryIO,
        *,
        token: str | None,
        size: int | None,
        sha256: str | None,
        until: threading.Event | None = None,
        tries: int | None = None,
    ) -> None:
        """Stream ``url`` into ``target`` (a file open for writing; rewritten from its start on every try) and
        check its size and SHA-256; retried like :meth:`call`.

        A relative ``url`` (or one on the server's own origin) is fetched with ``token``; any other
        (a presigned store URL) without it. A redirect to another origin drops the token.
        """
        absolute = url.startswith(("http://", "https://"))
        send_token = token if not absolute or self.same_origin(url) else None
        backoff = Backoff()
        attempt = mismatches = 0
        while True:
            if until is not None and until.is_set():
                raise Abandoned(url)
            attempt += 1
            try:
                problem = self._download_once(url, target, send_token, Expected(size, sha256), until)
            except httpx.TransportError as exc:
                problem = describe(exc)
            except _Mismatch as exc:
                mismatches += 1
                if mismatches >= MAX_MISMATCHES:
                    raise WorkerApiError(0, str(exc)) from None
                problem = str(exc)
            if problem is None:
                return
            if tries is not None and attempt >= tries:
                raise Unreachable(0, problem)
            delay = backoff.next()
            log.warning("download of %s failed (%s); retrying in %.1f s", url.split("?")[0], problem, delay)
            _pause(delay, until, url)

    def _download_once(
        self, url: str, target: BinaryIO, token: str | None, expected: Expected, until: threading.Event | None
    ) -> str | None:
        """One try: None when done, else why to try again (non-retryable problems raise)."""
        size, sha256 = expected
        digest = hashlib.sha256()
        written = 0
        timeout = httpx.Timeout(self.timeout, connect=10.0, pool=None)
        with self._http.stream(
            "GET", url, headers=bearer(token), timeout=timeout, follow_redirects=True
        ) as response:
            if response.is_error:
                response.read()
                kind, detail = problem_detail(response)
                if response.status_code == 401 and token:
                    raise Fenced(401, detail)
                if response.status_code == 409 and kind.endswith(FENCED_TYPE):
                    raise Fenced(409, detail)
                if response.status_code in RETRY_STATUSES:
                    return f"{response.status_code} {detail}"
                raise WorkerApiError(
                    response.status_code, f"download refused: {response.status_code} {detail}"
                )
            target.seek(0)
            target.truncate()
            for data in response.iter_bytes(CHUNK):
                if until is not None and until.is_set():
                    raise Abandoned(url)
                target.write(data)
                digest.update(data)
                written += len(data)
        if size is not None and written != size:
            raise _Mismatch(f"got {written} bytes instead of {size}")
        if sha256 and digest.hexdigest() != sha256:
            raise _Mismatch(f"its SHA-256 is {digest.hexdigest()}, not {sha256}")
        return None


class Expected(NamedTuple):
    """What a download must be: its size and SHA-256 (None: not known)."""

    size: int | None
    sha256: str | None


class _Mismatch(Exception):
    """What arrived is not the file the server described."""


def _retry_after(response: httpx.Response) -> float:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "0")))
    except ValueError:
        return 0.0
