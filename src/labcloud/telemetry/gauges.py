"""Numbers of the whole installation, read from the database when Prometheus scrapes: jobs by state and
executor, workers by state and their heartbeats' age, storage used.

Every replica answers with the same values (they read one database), so a dashboard takes ``max()`` over
replicas, never ``sum()``. The queries are small: jobs are counted through the (state, executor) index and
only in the states that do not last (queued to cancelling; finished jobs are counted by
``labcloud_job_run_seconds_count``), workers and projects are small tables. When the database does not
answer, ``labcloud_database_up`` is 0 and the rest is left out rather than reported as zero.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from labcloud import __version__
from labcloud.db.models import Job, Project, Worker, WorkerState
from labcloud.db.types import utcnow
from labcloud.services.handover import ENGINE_TOKEN_PREFIX
from labcloud.services.job_states import TERMINAL, JobState

if TYPE_CHECKING:
    from labcloud.runtime import Runtime

log = logging.getLogger(__name__)
LASTING = [s for s in JobState if s not in TERMINAL]  # the states a gauge of jobs counts
LOST = "lost"  # a worker (not revoked) whose last heartbeat is older than a lease


class DatabaseGauges(Collector):
    """The installation's gauges, plus this replica's own: whether it dispatches, and its version."""

    def __init__(self, ctx: Runtime) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("labcloud_build_info", "labcloud's version (always 1).", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        leads = self.ctx.leadership is not None and self.ctx.leadership.is_leader
        yield GaugeMetricFamily(
            "labcloud_dispatching",
            "1 on the replica that dispatches jobs (exactly one of them).",
            value=leads,
        )
        try:
            with self.ctx.db.session() as session:
                families = list(self._read(session, utcnow()))
        except Exception as exc:  # the scrape still answers: the database being down is what it tells
            log.warning("metrics: the database did not answer: %s", exc.__class__.__name__)
            families = []
            up = 0
        else:
            up = 1
        yield GaugeMetricFamily("labcloud_database_up", "1 when the gauges could be read.", value=up)
        yield from families

    def _read(self, session: Session, now: datetime) -> Iterator[Metric]:
        yield self._jobs(session)
        yield from self._workers(session, now)
        used = session.scalar(select(func.coalesce(func.sum(Project.storage_used_bytes), 0)))
        yield GaugeMetricFamily(
            "labcloud_storage_used_bytes",
            "Bytes the files of every project hold (as quotas count them). Same on every replica: use max().",
            value=int(used or 0),
        )

    def _jobs(self, session: Session) -> Metric:
        rows = session.execute(
            select(Job.state, Job.executor, func.count())
            .where(Job.state.in_(LASTING))
            .group_by(Job.state, Job.executor)
        ).all()
        counts = {(JobState(state).value, executor): int(n) for state, executor, n in rows}
        executors = (
            {executor for _, executor in counts} | set(self.ctx.executors) | {self.ctx.settings.executor}
        )
        family = GaugeMetricFamily(
            "labcloud_jobs",
            "Jobs not yet ended, by state and executor. Same on every replica: use max().",
            labels=["state", "executor"],
        )
        for executor in sorted(executors):  # zeros too: a series that vanishes is not a zero on a graph
            for state in LASTING:
                family.add_metric([state.value, executor], counts.get((state.value, executor), 0))
        return family

    def _workers(self, session: Session, now: datetime) -> Iterator[Metric]:
        cutoff = now - timedelta(seconds=self.ctx.settings.lease_seconds)
        heard = Worker.last_heartbeat_at
        live = case((heard >= cutoff, True), else_=False)
        rows = session.execute(
            select(Worker.state, live, func.count(), func.max(heard), func.min(heard))
            .where(Worker.token_prefix != ENGINE_TOKEN_PREFIX)  # an engine's row holds jobs, never beats
            .group_by(Worker.state, live)
        ).all()
        counts = dict.fromkeys([s.value for s in WorkerState] + [LOST], 0)
        newest: datetime | None = None
        oldest: datetime | None = None
        for state, is_live, n, latest, earliest in rows:
            state = WorkerState(state)
            if state == WorkerState.REVOKED:
                counts[state.value] += int(n)
                continue
            counts[state.value if is_live else LOST] += int(n)
            if latest is not None and (newest is None or latest > newest):
                newest = latest
            if earliest is not None and (oldest is None or earliest < oldest):
                oldest = earliest
        family = GaugeMetricFamily(
            "labcloud_workers",
            "Pull workers by state: active, draining, lost (silent for a lease), revoked. Use max().",
            labels=["state"],
        )
        for state, n in counts.items():
            family.add_metric([state], n)
        yield family
        ages = GaugeMetricFamily(
            "labcloud_worker_heartbeat_age_seconds",
            "Age of the newest and of the oldest last heartbeat of the workers not revoked (absent without "
            "any). Use max().",
            labels=["which"],
        )
        if newest is not None:
            ages.add_metric(["newest"], max((now - newest).total_seconds(), 0.0))
        if oldest is not None:
            ages.add_metric(["oldest"], max((now - oldest).total_seconds(), 0.0))
        yield ages
