"""The small interface every executor implements; the scheduler knows nothing else about them."""

from __future__ import annotations

import abc
import uuid
from collections.abc import Callable
from typing import ClassVar

from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.execution.loops import Loop
from labcloud.registry.models import Resources
from labcloud.services import lifecycle
from labcloud.services.job_states import JobState
from labcloud.settings import PluginSettings, Settings
from labcloud.storage.base import Storage


class Executor(abc.ABC):
    name: str
    # The plugin's own settings (``slurm_*`` ...), declared in its module; None when it has none.
    settings_model: ClassVar[type[PluginSettings] | None] = None

    def __init__(
        self, settings: Settings, db: Database, notify: Callable[[], None], storage: Storage
    ) -> None:
        """``notify``: tell the server there is new work or room for it (wakes dispatchers and waiting
        claims, here and on the other replicas)."""
        self.settings, self.db, self.notify, self.storage = settings, db, notify, storage
        self._running: list[Loop] = []

    @abc.abstractmethod
    def max_resources(self) -> dict[str, float]:
        """The largest job this executor can ever run (cpus, memory_mb, gpus)."""

    @abc.abstractmethod
    def fits_now(self, resources: Resources) -> bool:
        """Whether a job with these resources could start right now."""

    def admit(self, session: Session, job: Job) -> None:
        """Take a queued job for this executor, in the dispatcher's transaction (Conflict when someone
        else moved it first). By default it becomes the next attempt, staging."""
        lifecycle.transition(session, job, JobState.STAGING, attempts=job.attempts + 1, executor=self.name)

    @abc.abstractmethod
    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        """Start running a job the scheduler has just claimed (state: staging)."""

    @abc.abstractmethod
    def cancel(self, job_id: uuid.UUID) -> None:
        """Stop a job in state cancelling as soon as possible."""

    @abc.abstractmethod
    def recover(self) -> None:
        """After a restart: re-attach to jobs still running, settle the ones that ended or were lost."""

    @abc.abstractmethod
    def running_per_owner(self) -> dict[uuid.UUID, int]:
        """How many jobs of each user this executor holds (for fair dispatch)."""

    @abc.abstractmethod
    def wait_reason(self, resources: Resources) -> str:
        """Why a queued job with these resources is not running yet, in words for its owner."""

    def duties(self) -> list[Loop]:
        """What this executor does in the background on the leader, e.g. watching an engine."""
        return []

    def start(self) -> None:
        """Begin the background duties (on the leader, after :meth:`recover`)."""
        self._running = self.duties()
        for loop in self._running:
            loop.start()

    def shutdown(self) -> None:
        """Stop taking work and the background duties; running jobs keep running (their supervisors are
        detached, engines keep theirs)."""
        for loop in self._running:
            loop.stop()
        self._running = []
