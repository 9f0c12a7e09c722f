"""What a running server holds: settings, database, registry, dispatcher. One per process (``app.state``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.execution.executors.base import Executor
from labcloud.execution.leader import Leadership
from labcloud.execution.scheduler import Scheduler
from labcloud.execution.wakeups import Waker, Wakeups
from labcloud.ratelimit import LoginThrottle
from labcloud.registry import AppRegistry, bundled_apps_dir
from labcloud.services.housekeeping import Housekeeper
from labcloud.settings import Settings
from labcloud.storage import open_storage
from labcloud.storage.base import Storage


@dataclass
class AppContext:
    settings: Settings
    db: Database
    login_throttle: LoginThrottle
    apps: AppRegistry
    storage: Storage
    schedulers: list[Scheduler] = field(default_factory=list)
    housekeeper: Housekeeper | None = None
    executors: dict[str, Executor] = field(default_factory=dict)
    leadership: Leadership | None = None
    wakeups: Wakeups | None = None
    # Wakes what waits for new work in this process's event loops: remote workers' long-polling claims.
    waker: Waker = field(default_factory=Waker)

    @classmethod
    def create(cls, settings: Settings) -> AppContext:
        settings.ensure_home()
        db = Database(settings)
        return cls(
            settings=settings,
            db=db,
            login_throttle=LoginThrottle(db, settings),
            apps=AppRegistry(
                [bundled_apps_dir(), settings.effective_apps_dir],
                min_check_interval_s=settings.apps_check_interval_s,
            ),
            storage=open_storage(settings),
        )

    def start_dispatch(self) -> None:
        """Load the executors in use and compete for leadership: the leader runs their background duties,
        dispatches queued jobs (a scheduler per executor that is dispatched to) and keeps house; every
        replica serves the API, remote workers' claims included."""
        from labcloud.execution.executors import load

        self.executors = load(self.settings, self.db, self.notify, self.storage)
        self.wakeups = Wakeups(self.db, self._wake_here)
        self.wakeups.start()
        self.leadership = Leadership(
            self.db,
            self.settings.home / "leader.lock",
            self._lead,
            self._step_down,
            interval_s=self.settings.leader_check_interval_s,
        )
        self.leadership.start()

    def stop_dispatch(self) -> None:
        if self.leadership is not None:
            self.leadership.stop()
        if self.wakeups is not None:
            self.wakeups.stop()

    def _lead(self) -> None:
        for executor in self.executors.values():
            executor.recover()
            executor.start()
            if executor.dispatched:
                scheduler = Scheduler(self.db, executor, interval_s=self.settings.scheduler_interval_s)
                scheduler.start()
                self.schedulers.append(scheduler)
        self.housekeeper = Housekeeper(self.db, self.storage, self.settings)
        self.housekeeper.start()

    def _step_down(self) -> None:
        for scheduler in self.schedulers:
            scheduler.stop()
        self.schedulers = []
        for executor in self.executors.values():
            executor.shutdown()
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None

    def notify(self) -> None:
        """There is new work (or room for it): wake the dispatchers and waiting claims, here and on every
        other replica of this database."""
        self._wake_here()
        if self.wakeups is not None:
            self.wakeups.send()

    def _wake_here(self) -> None:
        for scheduler in self.schedulers:
            scheduler.wake()
        self.waker.notify()

    def ceiling(self, executor: str | None = None) -> dict[str, float] | None:
        """The largest job an executor (default: the default one) can run, to refuse bigger ones at submit."""
        found = self.executors.get(executor or self.settings.executor)
        return found.max_resources() if found is not None else None

    def wait_reason(self, job: Job) -> str | None:
        """Why a queued job is not running yet, in words for its owner (None: its message says)."""
        if job.worker_id is not None:  # in an engine's queue: the engine's words are in the message
            return None
        found = self.executors.get(job.executor)
        return found.wait_reason(job) if found is not None else None

    def cancel(self, job: Job) -> None:
        """Tell the job's executor that the job became ``cancelling``."""
        found = self.executors.get(job.executor)
        if found is not None:
            found.cancel(job.id)
