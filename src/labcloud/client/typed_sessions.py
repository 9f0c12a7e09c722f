"""Sessions across devices in the Python client: :class:`Sessions` of :class:`~labcloud.client.Client`
starts one (one job on each chosen device), lists and reads them; a :class:`Session` refreshes, waits and
cancels."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from labcloud.client import calls
from labcloud.client.models import Model

if TYPE_CHECKING:
    from labcloud.client.client import Client

__all__ = ["Session", "SessionPart", "Sessions"]

ENDED = {"succeeded", "failed", "cancelled", "partial"}


class SessionPart(Model):
    """One device's part: its job and how it stands (``note``: what was said of the device at the start,
    such as being busy in another session)."""

    worker: str
    job_id: uuid.UUID
    run_number: int
    state: str
    reason: str | None = None
    message: str = ""
    progress: float | None = None
    params: dict[str, Any] = {}
    note: str = ""


class Session(Model):
    """A session: ``state`` is queued, running, or once every part has ended succeeded, failed, cancelled
    or partial; ``devices`` is each device's part."""

    id: uuid.UUID
    name: str = ""
    app: str
    version: str
    entrypoint: str
    project: str = ""
    params: dict[str, Any] = {}
    state: str
    counts: dict[str, int] = {}
    devices: list[SessionPart] = []
    created_at: datetime
    _client: Any = PrivateAttr(default=None)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def _assign(self, data: dict[str, Any]) -> Session:
        fresh = Session.model_validate(data)
        for name in type(self).model_fields:
            setattr(self, name, getattr(fresh, name))
        return self

    def refresh(self) -> Session:
        return self._assign(self._client.connection.call(calls.session(str(self.id))))

    def wait(self, timeout: float | None = None, poll_s: float = 1.0) -> Session:
        """Until every part has ended (or ``timeout`` seconds: then as it is)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().ended and (deadline is None or time.monotonic() < deadline):
            time.sleep(poll_s)
        return self

    def cancel(self) -> Session:
        """Cancel every part that has not ended."""
        return self._assign(self._client.connection.call(calls.cancel_session(str(self.id))))


def _bind(data: dict[str, Any], client: Client) -> Session:
    found = Session.model_validate(data)
    found._client = client
    return found


class Sessions:
    """Sessions across devices: one job on each chosen instrument, with shared and per-device parameters."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def start(
        self,
        app: str,
        devices: Mapping[str, Mapping[str, Any]] | list[str] | None = None,
        *,
        params: Mapping[str, Any] | None = None,
        labels: Mapping[str, str] | None = None,
        name: str = "",
        version: str | None = None,
        entrypoint: str | None = None,
        project: str | None = None,
        **options: Any,
    ) -> Session:
        """Start a session: ``devices`` names each device (with its own parameters: ``{"box-1": {"prefix":
        "a"}}``), or ``labels`` chooses every connected device that has them; ``params`` are shared."""
        chosen = devices or {}
        parts = [
            {"worker": w, "params": dict(chosen[w]) if isinstance(chosen, Mapping) else {}} for w in chosen
        ]
        body = {
            "app": app,
            "version": version,
            "entrypoint": entrypoint,
            "params": dict(params or {}),
            "devices": parts,
            "labels": dict(labels or {}),
            "name": name,
            **({"project": project} if project else {}),
            **options,
        }
        return _bind(self._client.connection.call(calls.start_session(body)), self._client)

    def get(self, session_id: str | uuid.UUID) -> Session:
        return _bind(self._client.connection.call(calls.session(str(session_id))), self._client)

    def list(self, project: str | None = None) -> list[Session]:
        """Your sessions (``project``: that project's), newest first (the first page)."""
        page = self._client.connection.call(calls.sessions(project))
        return [_bind(item, self._client) for item in page.get("items") or []]
