"""The dispatcher: takes queued jobs, fairly across users, and hands each to the executor.

Fairness: each round offers every user with queued work their oldest job: users with the fewest running
jobs first; among those, the job whose project has used the least lately (its CPU-hours decayed with a
half-life, :func:`labcloud.services.accounting.decayed_usage`, as Slurm's fair share does); then the user
served longest ago. Rounds repeat while jobs still fit. One user's thousand jobs therefore never starve
another user's one, and a project that has used little gets the next free slot.

A later user's smaller job may start when an earlier user's does not fit (backfill), but only while the
room it takes was already free for the earlier one: when capacity frees during a round (a job ended
between two checks), the round starts again from the top, so the room goes to whoever is first in line.

When only one user has queued work (a sweep of a thousand jobs, say), a round offers that user's oldest
jobs in order, up to ``BATCH`` of them, from one query, and stops at the first that does not fit: the line
of one is the same, without asking the database who is in it again for every job.
After a round that started nothing (the machine is full), the next one reads just the first job of that
line: a wake-up per submit then costs one row, not a batch that cannot start.
"""

from __future__ import annotations

import time
import uuid

from sqlalchemy import ColumnElement, Select, TextClause, select
from sqlalchemy.orm import Session

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.db.models.jobs import WAITING_CLAUSE, without_definition
from labcloud.errors import Conflict
from labcloud.execution.executors.base import Executor
from labcloud.execution.loops import Loop
from labcloud.registry.spec_parts import Resources
from labcloud.services import accounting, maintenance
from labcloud.services.job_states import JobState
from labcloud.telemetry import metrics

USAGE_TTL_S = 5.0
BATCH = 32  # a lone user's jobs offered in one round
# Rest between two rounds: while submits arrive faster than this, each round takes all of them, rather than
# every submit paying for a round that reads the whole queue again. It is what a job may wait at most,
# beyond the round in progress, when it comes right after one.
MIN_GAP_S = 0.02


class Scheduler(Loop):
    """Dispatches one executor's queued jobs every ``interval_s``, and at once when woken (:meth:`wake`:
    a job was queued or ended)."""

    def __init__(
        self, db: Database, executor: Executor, interval_s: float = 1.0, half_life_h: float = 0.0
    ) -> None:
        super().__init__(f"dispatch-{executor.name}", interval_s, min_gap_s=MIN_GAP_S)
        self.db = db
        self.executor = executor
        self.half_life_h = half_life_h  # of projects' usage in the order (0: usage does not count)
        self._last_served: dict[uuid.UUID, float] = {}
        self._usage: tuple[float, dict[uuid.UUID, float]] = (0.0, {})
        # How many of a lone user's jobs the next round reads: BATCH while jobs start, one after a round
        # that started none (the machine is full: each wake-up by a submit then reads one queued job).
        self._offer = BATCH
        # Admitted, not yet submitted (an executor with a ``submit_lot``): job, owner, resources, when taken.
        self._lot: list[tuple[uuid.UUID, uuid.UUID, Resources, float]] = []

    def step(self) -> None:
        self.dispatch()

    def dispatch(self) -> int:
        """Start as many queued jobs as fit (none in maintenance); return how many were started."""
        if maintenance.current(self.db.engine).enabled:
            return 0
        started = 0
        try:
            while True:
                started_this_round, again = self._round()
                started += started_this_round
                if not (started_this_round or again) or self.stopping:
                    return started
        finally:
            self._submit_lot()  # what was admitted is submitted, whatever stopped the rounds

    def _submit_lot(self) -> None:
        lot, self._lot = self._lot, []
        if lot:
            self.executor.submit_many([(job_id, owner, resources) for job_id, owner, resources, _ in lot])
            done = time.perf_counter()
            for *_, taken in lot:
                metrics.DISPATCH_SECONDS.labels(self.executor.name).observe(done - taken)

    def _round(self) -> tuple[int, bool]:
        """Offer each user's first job once, in fair order; return how many started and whether room freed
        for a job passed over in this round (then the round must start again)."""
        started = 0
        passed_over: list[Resources] = []  # what this round could not fit, in the order of the line
        waiting: set[uuid.UUID] = set()  # users whose job did not fit: their later ones wait behind it
        for owner_id, job_id, resources in self._candidates(self._offer):
            if self.stopping:
                break
            if owner_id in waiting:
                continue
            outcome = self._claim(job_id, owner_id, resources, passed_over)
            if outcome == "started":
                started += 1
            elif outcome == "waits":
                waiting.add(owner_id)
            elif outcome == "room_freed":
                return started, True
        self._offer = BATCH if started else 1
        return started, False

    def _candidates(self, offer: int = BATCH) -> list[tuple[uuid.UUID, uuid.UUID, Resources]]:
        waiting = (WAITING_CLAUSE, Job.executor == self.executor.name)  # ix_jobs_waiting_executor_owner_id_id
        with self.db.session() as session:
            owners = session.scalars(owners_waiting(waiting)).all()
            if len(owners) == 1:  # a line of one: their oldest jobs, in order
                alone = (
                    select(Job.id, Job.resources)
                    .where(*waiting, Job.owner_id == owners[0])
                    .order_by(Job.id)
                    .limit(offer)
                )
                return [(owners[0], job_id, resources) for job_id, resources in session.execute(alone)]
            # Each user's oldest queued job: one index lookup per user (PostgreSQL has no min() of uuid).
            rows: list[tuple[uuid.UUID, uuid.UUID, uuid.UUID, Resources]] = []
            for owner in owners:
                oldest = (
                    select(Job.id, Job.project_id, Job.resources)
                    .where(*waiting, Job.owner_id == owner)
                    .order_by(Job.id)
                )
                found = session.execute(oldest.limit(1)).first()
                if found is not None:
                    rows.append((owner, found[0], found[1], found[2]))
            usage = self._project_usage(session, [project for _, _, project, _ in rows])
        running = self.executor.running_per_owner()
        # Fewest running first; then the project that used least lately; then the user served longest
        # ago (round robin); then the oldest job.
        rows.sort(
            key=lambda r: (
                running.get(r[0], 0),
                round(usage.get(r[2], 0.0), 6),
                self._last_served.get(r[0], 0.0),
                r[1],
            )
        )
        return [(owner, job_id, resources) for owner, job_id, _, resources in rows]

    def _project_usage(self, session: Session, projects: list[uuid.UUID]) -> dict[uuid.UUID, float]:
        """The projects' decayed usage, read at most every USAGE_TTL_S (it changes slowly)."""
        if self.half_life_h <= 0 or len(set(projects)) < 2:
            return {}
        read_at, cached = self._usage
        now = time.monotonic()
        if now - read_at > USAGE_TTL_S or not set(projects) <= set(cached):
            cached = {p: 0.0 for p in projects} | accounting.decayed_usage(
                session, projects, self.half_life_h
            )
            self._usage = (now, cached)
        return cached

    def _claim(
        self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources, passed_over: list[Resources]
    ) -> str:
        """Start one job (of these ``resources``) if it fits and nobody before it in this round's line now
        would: "started", "waits" (does not fit; remembered in ``passed_over``), "gone" (no longer queued)
        or "room_freed" (a job passed over earlier fits now: capacity freed during the round). One that
        does not fit is not loaded (a full machine: a round reads no job)."""
        if not self.executor.fits_now(resources):
            passed_over.append(resources)
            return "waits"
        with self.db.session() as session:
            job = session.get(Job, job_id, options=without_definition())
            if job is None or job.state != JobState.QUEUED:
                return "gone"
            if any(self.executor.fits_now(earlier) for earlier in passed_over):
                return "room_freed"
            taken = time.perf_counter()
            try:
                self.executor.admit(session, job)
            except Conflict:  # cancelled (or taken) between our read and our write
                return "gone"
        self._last_served[owner_id] = time.monotonic()
        if self.executor.submit_lot > 0:
            self._lot.append((job_id, owner_id, resources, taken))
            if len(self._lot) >= self.executor.submit_lot:
                self._submit_lot()
            return "started"
        self.executor.submit(job_id, owner_id, resources)
        metrics.DISPATCH_SECONDS.labels(self.executor.name).observe(time.perf_counter() - taken)
        return "started"


def owners_waiting(waiting: tuple[ColumnElement[bool] | TextClause, ...]) -> Select[uuid.UUID]:
    """Who has jobs waiting, read as a loose index scan: from each owner to the next one up, one seek each in
    the dispatch index, rather than every queued job's row (which a DISTINCT reads: a dispatcher woken by
    each of ten thousand submits would read them all each time)."""
    first = select(Job.owner_id).where(*waiting).order_by(Job.owner_id).limit(1).scalar_subquery()
    owners = select(first.label("owner_id")).cte("owners", recursive=True)
    following = (
        select(Job.owner_id)
        .where(*waiting, Job.owner_id > owners.c.owner_id)
        .order_by(Job.owner_id)
        .limit(1)
        .scalar_subquery()
    )
    owners = owners.union_all(select(following).where(owners.c.owner_id.is_not(None)))
    return select(owners.c.owner_id).where(owners.c.owner_id.is_not(None))
