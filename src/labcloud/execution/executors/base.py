"""The small interface every executor implements; the scheduler and the server's context know nothing else
about them.

Every replica loads the executors in use by name (:mod:`labcloud.execution.executors`) and asks them why a
queued job waits, how large a job they can run, and to cancel. On the leader each one also recovers after a
restart, runs its background :meth:`~Executor.duties` and, when it is ``dispatched`` to, is fed queued jobs
by a scheduler (:meth:`~Executor.fits_now`, :meth:`~Executor.admit`, :meth:`~Executor.submit`). An executor
whose workers take their jobs themselves (pull) is not dispatched to.
"""

from __future__ import annotations

import abc
import uuid
from collections.abc import Callable
from typing import ClassVar

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.execution.loops import Loop
from labcloud.registry.spec_parts import Resources
from labcloud.services import lifecycle
from labcloud.services.job_states import ACTIVE, JobState
from labcloud.settings import PluginSettings, Settings
from labcloud.storage.base import Storage


class Executor(abc.ABC):
    name: ClassVar[str]
    # The plugin's own settings (``slurm_*`` ...), declared in its module; None when it has none.
    settings_model: ClassVar[type[PluginSettings] | None] = None
    # True: the leader runs a scheduler that hands this executor its queued jobs. False: they are taken
    # otherwise (remote workers claim them).
    dispatched: ClassVar[bool] = True
    # True: its jobs run on remote workers, which report their container engines with each heartbeat;
    # whether container apps can run is then theirs to say as well as this server's engine's.
    engines_on_workers: ClassVar[bool] = False
    # True: :meth:`wait_reason` reads the job's spec (listings, which leave the spec out, then read it).
    wait_reads_spec: ClassVar[bool] = False
    # > 0: the scheduler hands this executor the jobs it admits in lots of up to this many
    # (:meth:`submit_many`) rather than one by one as it admits them; an engine that queues takes a lot in
    # fewer calls (a sweep as one Slurm job array).
    submit_lot: int = 0

    def __init__(
        self, settings: Settings, db: Database, notify: Callable[[], None], storage: Storage
    ) -> None:
        """``notify``: tell the server there is new work or room for it (wakes dispatchers and waiting
        claims, here and on the other replicas)."""
        self.settings, self.db, self.notify, self.storage = settings, db, notify, storage
        self._running: list[Loop] = []

    # ------------------------------------------------------------------------------ on every replica

    @abc.abstractmethod
    def max_resources(self) -> dict[str, float]:
        """The largest job this executor can ever run (cpus, memory_mb, gpus; none given: no limit)."""

    @abc.abstractmethod
    def wait_reason(self, job: Job) -> str:
        """Why a queued job is not running yet, in words for its owner."""

    @abc.abstractmethod
    def cancel(self, job_id: uuid.UUID) -> None:
        """Stop a job in state cancelling as soon as possible."""

    # ------------------------------------------------------------------------------ dispatching

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

    def submit_many(self, admitted: list[tuple[uuid.UUID, uuid.UUID, Resources]]) -> None:
        """Start running jobs the scheduler has just claimed: (job id, owner id, resources) each."""
        for job_id, owner_id, resources in admitted:
            self.submit(job_id, owner_id, resources)

    def running_per_owner(self) -> dict[uuid.UUID, int]:
        """How many jobs of each user this executor holds (for fair dispatch); by default its active jobs."""
        with self.db.session() as session:
            rows = session.execute(
                select(Job.owner_id, func.count())
                .where(Job.executor == self.name, Job.state.in_(list(ACTIVE)))
                .group_by(Job.owner_id)
            ).all()
        return {owner: int(n) for owner, n in rows}

    # ------------------------------------------------------------------------------ on the leader

    @abc.abstractmethod
    def recover(self) -> None:
        """After a restart: re-attach to jobs still running, settle the ones that ended or were lost."""

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
