"""What the Slurm and Celery executors share: an engine that queues and runs jobs on its own machines.

Dispatching is handing over: the job becomes its next attempt in the engine's queue (still ``queued``, held
by the engine's worker row, with a job token), and the engine is asked to run ``labcloud run-job`` (or its
Celery task) with it; the runner's take moves it to ``staging``. From there on the
runner reports through the worker API like a pull worker, and its lease guards against a second runner. The
engine itself queues, so a job always "fits"; the engine's own fair share decides the order there.
"""

from __future__ import annotations

import abc
import logging
import uuid
from collections.abc import Hashable
from typing import ClassVar

from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud.db.models import Job, JobEvent, Worker
from labcloud.execution.executors.base import Executor
from labcloud.execution.loops import Loop
from labcloud.registry.spec_parts import Resources
from labcloud.services import executor_refs, handover, lifecycle
from labcloud.services.executor_refs import EngineRefs, ExecutorRef
from labcloud.services.job_states import ACTIVE, FailureReason, JobState

log = logging.getLogger(__name__)


class EngineRefused(Exception):
    """The engine would not take the job (a bad partition, a request larger than any node...)."""


class EngineExecutor(Executor):
    ref_type: ClassVar[type[EngineRefs]]  # how the job's executor_ref keeps what the engine calls it

    # ------------------------------------------------------------------------------ engine specifics

    @abc.abstractmethod
    def queue_for(self, job: Job) -> str:
        """The engine queue (partition) a job goes to."""

    @abc.abstractmethod
    def send(self, job: Job, token: str, queue: str) -> str:
        """Ask the engine to run the job's runner with ``token``; what the engine calls it (kept in the
        job's executor_ref). Raise :class:`EngineRefused` when the engine says no."""

    def withdraw(self, engine_id: str) -> None:
        """Take a job that no runner has taken yet back from the engine (best effort)."""

    def reconcile(self) -> None:
        """Compare the engine's view of our jobs with ours; settle the ones it ended without a report."""

    def poll_interval(self) -> float:
        """> 0: :meth:`reconcile` this often (on the leader)."""
        return 0.0

    def waiting_message(self, queue: str) -> str:
        return f"waiting in {self.name} queue {queue}"

    # ------------------------------------------------------------------------------ the interface

    def max_resources(self) -> dict[str, float]:
        return {}  # the engine refuses what none of its machines can run

    def fits_now(self, resources: Resources) -> bool:
        return True

    def wait_reason(self, job: Job) -> str:
        return f"about to be handed to {self.name}"

    def admit(self, session: Session, job: Job) -> None:
        """The job joins the engine's queue as its next attempt; it stays queued until a runner takes it."""
        worker = handover.engine_worker(session, self.name)
        handover.hand_over(session, self.settings, job, worker)
        job.queue = self.queue_for(job) or None

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        self.submit_many([(job_id, owner_id, resources)])

    def submit_many(self, admitted: list[tuple[uuid.UUID, uuid.UUID, Resources]]) -> None:
        """Send jobs the scheduler has just admitted to the engine: those :meth:`batch_key` groups together
        in one call each (:meth:`send_together`, a Slurm job array), the others one by one."""
        job_ids = [job_id for job_id, _, _ in admitted]
        with self.db.session() as session:
            jobs = [
                job
                for job in session.scalars(select(Job).where(Job.id.in_(job_ids)).order_by(Job.id))
                if handover.in_engine_queue(job)  # the others were cancelled in between
            ]
            worker = handover.engine_worker(session, self.name)
            groups: dict[Hashable, list[Job]] = {}
            for job in jobs:
                key = self.batch_key(job)
                groups.setdefault(key if key is not None else job.id, []).append(job)
            for group in groups.values():
                self._send_group(session, group, worker)
                session.commit()  # each group's engine ids kept as soon as they are known

    def _send_group(self, session: Session, group: list[Job], worker: Worker) -> None:
        tokens = [handover.handover_token(self.settings, job, worker) for job in group]
        queue = group[0].queue or ""
        try:
            if len(group) == 1:
                engine_ids = [self.send(group[0], tokens[0], queue)]
            else:
                engine_ids = self.send_together(list(zip(group, tokens, strict=True)), queue)
        except EngineRefused as exc:
            log.warning("%s refused %d job(s) from %s: %s", self.name, len(group), group[0].id, exc)
            for job in group:
                settle(session, job, FailureReason.REJECTED, f"{self.name} refused the job: {exc}")
            return
        except Exception as exc:
            log.exception("handing %d job(s) from %s to %s failed", len(group), group[0].id, self.name)
            for job in group:
                settle(session, job, FailureReason.WORKER_LOST, f"could not hand it to {self.name}: {exc}")
            self.notify()
            return
        for job, engine_id in zip(group, engine_ids, strict=True):
            self._sent(session, job, engine_id, queue)

    def _sent(self, session: Session, job: Job, engine_id: str, queue: str) -> None:
        """Keep what the engine calls the job; one cancelled while it was being sent is taken back."""
        session.refresh(job)
        log_base = executor_refs.log_base(job.executor_ref)
        job.executor_ref = self.ref_type(log_base=log_base, engine_id=engine_id)
        if handover.in_engine_queue(job):
            job.message = self.waiting_message(queue)
        elif job.state == JobState.CANCELLED:
            self.withdraw(engine_id)

    def batch_key(self, job: Job) -> Hashable | None:
        """Jobs with the same key (not None) go to the engine in one :meth:`send_together`; None: alone."""
        return None

    def send_together(self, jobs: list[tuple[Job, str]], queue: str) -> list[str]:
        """Send jobs (with their tokens) that :meth:`batch_key` put together in one call; what the engine
        calls each, in order. Raise :class:`EngineRefused` when the engine says no to them."""
        return [self.send(job, token, queue) for job, token in jobs]

    def cancel(self, job_id: uuid.UUID) -> None:
        """Cancelled in the engine's queue (at once, by the API): take it out of there too. Taken by a
        runner (cancelling): the runner learns it from its next heartbeat."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state != JobState.CANCELLED or job.lease_expires_at is not None:
                return
            engine_id = executor_refs.engine_id(job.executor_ref)
        if engine_id is not None:
            self.withdraw(engine_id)

    def recover(self) -> None:
        """The engine kept its jobs (:meth:`reconcile` settles what ended there). Only a job the last
        leader stopped between taking it and handing it over is unknown to the engine: queue it again."""
        unsent = [job_id for job_id, ref in self.active_jobs() if executor_refs.engine_id(ref) is None]
        for job_id in unsent:
            with self.db.session() as session:
                job = session.get(Job, job_id)
                if job is not None and handover.in_engine_queue(job):
                    job.worker_id = None
                    job.message = f"never reached {self.name}; sent again"
                    session.add(
                        JobEvent(job_id=job.id, from_state=job.state, to_state=job.state, message=job.message)
                    )
        if unsent:
            log.warning(
                "%d job(s) had not reached %s when the last dispatcher stopped", len(unsent), self.name
            )

    def duties(self) -> list[Loop]:
        if self.poll_interval() <= 0:
            return []
        return [Loop(f"reconcile-{self.name}", self.poll_interval(), self.reconcile)]

    def active_jobs(self) -> list[tuple[uuid.UUID, ExecutorRef | None]]:
        """Our jobs the engine holds, in its queue or running (id, executor_ref)."""
        with self.db.session() as session:
            rows = session.execute(
                select(Job.id, Job.executor_ref).where(
                    Job.executor == self.name,
                    Job.state.in_(list(ACTIVE))
                    | ((Job.state == JobState.QUEUED) & Job.worker_id.is_not(None)),
                )
            ).all()
        return [(job_id, ref) for job_id, ref in rows]


def settle(session: Session, job: Job, reason: FailureReason, message: str) -> None:
    """End a job the engine ended without its runner reporting."""
    session.refresh(job)
    lifecycle.end_without_report(session, job, reason, message)
