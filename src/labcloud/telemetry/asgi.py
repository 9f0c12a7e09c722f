"""The outermost middleware: names every request with an id and counts it.

Pure ASGI (no ``BaseHTTPMiddleware``, which would put each request through an extra task and stream its
answer through a memory channel): a context variable set, the id added to the answer's headers, and two
metric updates when the answer is done, a few microseconds a request.

- **Request id:** the client's ``X-Request-ID`` when it is sane (1 to 128 letters, digits and ``-_.:``),
  else a fresh one; answered in ``X-Request-ID`` and written on every log line of the request
  (:mod:`labcloud.telemetry.logs`).
- **Metrics:** by the route's template (``/api/v1/jobs/{job_id}``, never the path itself: the labels stay
  few), the method and the status; a request that matched no route counts as ``(unmatched)``.
"""

from __future__ import annotations

import itertools
import os
import re
import secrets
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from labcloud.telemetry.logs import REQUEST_ID
from labcloud.telemetry.metrics import HTTP_REQUESTS, HTTP_SECONDS

HEADER = b"x-request-id"
SANE_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "(unmatched)"


# A new id: this process's random half and a count (32 hex digits). Unique across processes and replicas
# without asking the kernel for randomness at every request (a uuid4 took 10 µs on a busy machine); an id
# names a request in the logs, it is no secret.
_PROCESS = secrets.token_hex(8)
_NEXT = itertools.count(int.from_bytes(os.urandom(4), "big"))


def request_id(headers: list[tuple[bytes, bytes]]) -> str:
    """The client's request id if it sent a sane one, else a new one."""
    for name, value in headers:
        if name == HEADER:
            if SANE_ID.fullmatch(value):
                return value.decode("ascii")
            break
    return f"{_PROCESS}{next(_NEXT) & 0xFFFFFFFFFFFFFFFF:016x}"


def route_template(scope: Scope) -> str:
    route = scope.get("route")  # set by FastAPI when a route matched (fully, or all but the method)
    if route is not None:
        return str(getattr(route, "path_format", None) or getattr(route, "path", UNMATCHED))
    if "app_root_path" in scope:  # a mounted app (the static files)
        return f"{scope.get('root_path', '')}/{{path}}"
    return UNMATCHED


class RequestTelemetry:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = request_id(scope["headers"])
        token = REQUEST_ID.set(rid)
        status = 500  # unless an answer started: an exception that escapes becomes one
        echo = (HEADER, rid.encode("ascii"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), echo]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
            self._count(scope, status, time.perf_counter() - started)

    def _count(self, scope: Scope, status: int, elapsed: float) -> None:
        method = scope["method"] if scope["method"] in METHODS else "other"
        key = (method, route_template(scope), status)
        children = self._children.get(key)
        if children is None:  # label lookups take a lock: do them once per (method, route, status)
            children = (
                HTTP_REQUESTS.labels(key[0], key[1], str(status)),
                HTTP_SECONDS.labels(key[0], key[1]),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(elapsed)
