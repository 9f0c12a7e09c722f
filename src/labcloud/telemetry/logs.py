"""Log lines as text (the default) or as one JSON object each (``log_format = "json"``), for a log collector.

Every request gets an id (:mod:`labcloud.telemetry.asgi`) kept in :data:`REQUEST_ID` while it is handled;
:class:`RequestIdFilter` writes it on every record logged meanwhile (in the request's task, and in the
threads its synchronous parts run in, which inherit the context), and the JSON format shows it.
"""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

REQUEST_ID: ContextVar[str | None] = ContextVar("labcloud_request_id", default=None)
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` (or None outside a request) to every record."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = REQUEST_ID.get()
        return True


ROUTINE_WORKER_CALLS = frozenset({"/api/v1/worker/heartbeat", "/api/v1/worker/claim"})


class QuietWorkerCalls(logging.Filter):
    """Leaves out of the access log the answered heartbeats and claims of remote workers: a fleet of 500
    devices makes 50 of them a second, which say nothing an operator reads (the metrics count them) and
    cost the server more to write than the rest of their handling. Refusals and errors stay."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) == 5 and args[2] in ROUTINE_WORKER_CALLS:
            status = args[4]
            return not (isinstance(status, int) and status < 400)
        return True


def quiet_worker_calls(quiet: bool) -> None:
    """Put :class:`QuietWorkerCalls` on uvicorn's access log (or take it off)."""
    access = logging.getLogger("uvicorn.access")
    for old in [f for f in access.filters if isinstance(f, QuietWorkerCalls)]:
        access.removeFilter(old)
    if quiet:
        access.addFilter(QuietWorkerCalls())


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message, request_id when in a request,
    exception when there is one; an access log line also as method, path, status and client."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id:
            line["request_id"] = request_id
        if record.name == "uvicorn.access" and isinstance(record.args, tuple) and len(record.args) == 5:
            client, method, path, _version, status = record.args
            line.update(client=client, method=method, path=path, status=status)
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


def configure(level: str, fmt: str) -> None:
    """Send the root logger's records to standard error in ``fmt`` ("text" or "json")."""
    handler = logging.StreamHandler()
    handler.addFilter(RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    logging.captureWarnings(True)  # a library's warning is a log line too (JSON in the JSON format)
    root.setLevel(level.upper())
