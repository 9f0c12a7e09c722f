"""Parameter sweeps in the Python client: :class:`Sweeps` of :class:`~labcloud.client.Client` submits one
(a job for each combination of a grid's values, or for each set of parameters), lists and reads them; a
:class:`Sweep` refreshes, waits, lists its jobs and cancels."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import PrivateAttr

from labcloud.client import calls
from labcloud.client.models import Model

if TYPE_CHECKING:
    from labcloud.client.client import Client

__all__ = ["Sweep", "Sweeps"]

ENDED = {"succeeded", "failed", "cancelled", "partial"}


class Sweep(Model):
    """A sweep: ``state`` is queued, running, or once every job has ended succeeded, failed, cancelled or
    partial; ``counts`` its jobs by state, ``done`` the fraction that has ended."""

    id: uuid.UUID
    name: str = ""
    app: str
    version: str
    entrypoint: str
    project: str = ""
    params: dict[str, Any] = {}
    varies: list[str] = []
    total: int
    counts: dict[str, int] = {}
    state: str
    done: float = 0.0
    created_at: datetime
    _client: Any = PrivateAttr(default=None)

    @property
    def ended(self) -> bool:
        return self.state in ENDED

    def _assign(self, data: dict[str, Any]) -> Sweep:
        fresh = Sweep.model_validate(data)
        for name in type(self).model_fields:
            setattr(self, name, getattr(fresh, name))
        return self

    def refresh(self) -> Sweep:
        return self._assign(self._client.connection.call(calls.sweep(str(self.id))))

    def wait(self, timeout: float | None = None, poll_s: float = 1.0) -> Sweep:
        """Until every job has ended (or ``timeout`` seconds: then as it is)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.refresh().ended and (deadline is None or time.monotonic() < deadline):
            time.sleep(poll_s)
        return self

    def jobs(self) -> Iterator[dict[str, Any]]:
        """Its jobs (as the API shows them), in the order they were made, page after page."""
        cursor: str | None = None
        while True:
            page = self._client.connection.call(calls.sweep_jobs(str(self.id), cursor))
            yield from page.get("items") or []
            cursor = page.get("next_cursor")
            if not cursor:
                return

    def cancel(self) -> Sweep:
        """Cancel every job that has not ended."""
        return self._assign(self._client.connection.call(calls.cancel_sweep(str(self.id))))


def _bind(data: dict[str, Any], client: Client) -> Sweep:
    found = Sweep.model_validate(data)
    found._client = client
    return found


class Sweeps:
    """Parameter sweeps: many jobs of one app, one per combination or set of parameters, submitted at once."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def submit(
        self,
        app: str,
        *,
        grid: Mapping[str, Sequence[Any]] | None = None,
        sets: Sequence[Mapping[str, Any]] | None = None,
        params: Mapping[str, Any] | None = None,
        name: str = "",
        version: str | None = None,
        entrypoint: str | None = None,
        project: str | None = None,
        **options: Any,
    ) -> Sweep:
        """Submit a sweep: ``grid`` (``{"i_ext": [1, 2], "tau_m": [10, 20]}``: a job per combination) or
        ``sets`` (``[{"i_ext": 1}, {"i_ext": 2}]``: a job per set); ``params`` are shared by every job."""
        body: dict[str, Any] = {
            "app": app,
            "version": version,
            "entrypoint": entrypoint,
            "params": dict(params or {}),
            "name": name,
            **({"grid": {k: list(v) for k, v in grid.items()}} if grid is not None else {}),
            **({"sets": [dict(s) for s in sets]} if sets is not None else {}),
            **({"project": project} if project else {}),
            **options,
        }
        return _bind(self._client.connection.call(calls.submit_sweep(body)), self._client)

    def get(self, sweep_id: str | uuid.UUID) -> Sweep:
        return _bind(self._client.connection.call(calls.sweep(str(sweep_id))), self._client)

    def list(self, project: str | None = None) -> list[Sweep]:
        """Your sweeps (``project``: that project's), newest first (the first page)."""
        page = self._client.connection.call(calls.sweeps(project))
        return [_bind(item, self._client) for item in page.get("items") or []]
