"""What a running server holds: settings, database, registry, dispatcher. One per process (``app.state``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from labcloud.db.engine import Database
from labcloud.execution.executors.base import Executor
from labcloud.execution.executors.pull import PullExecutor
from labcloud.execution.leader import Leadership
from labcloud.execution.scheduler import Scheduler
from labcloud.execution.wakeups import Wakeups
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
    scheduler: Scheduler | None = None
    housekeeper: Housekeeper | None = None
    executor: Executor | None = field(default=None)
    leadership: Leadership | None = None
    wakeups: Wakeups | None = None
    pull: PullExecutor = field(init=False)

    def __post_init__(self) -> None:
        self.pull = PullExecutor(self.settings, self.db)

    @classmethod
    def create(cls, settings: Settings) -> AppContext:
        return cls(
            settings=settings,
            db=Database(settings),
            login_throttle=LoginThrottle(settings.login_max_failures, settings.login_window_seconds),
            apps=AppRegistry(
                [bundled_apps_dir(), settings.effective_apps_dir],
                min_check_interval_s=settings.apps_check_interval_s,
            ),
            storage=open_storage(settings),
        )

    def start_dispatch(self) -> None:
        """Compete for leadership: the leader runs queued jobs (local executor), watches remote workers'
        leases and keeps house; every replica serves the API, claims included."""
        from labcloud.execution.executors.local import LocalExecutor

        if self.settings.executor == "local":
            self.executor = LocalExecutor(self.settings, self.db, self.notify, self.storage)
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
        if self.executor is not None:
            self.scheduler = Scheduler(self.db, interval_s=self.settings.scheduler_interval_s)
            self.scheduler.attach(self.executor)
            self.scheduler.start()
        self.pull.start()
        self.housekeeper = Housekeeper(self.db, self.storage, self.settings)
        self.housekeeper.start()

    def _step_down(self) -> None:
        self.pull.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
            self.scheduler = None
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None

    def notify(self) -> None:
        """There is new work (or room for it): wake the dispatcher and waiting claims, here and on every
        other replica of this database."""
        self._wake_here()
        if self.wakeups is not None:
            self.wakeups.send()

    def _wake_here(self) -> None:
        if self.scheduler is not None:
            self.scheduler.notify()
        self.pull.notify()

    def ceiling(self) -> dict[str, float] | None:
        """The largest job this installation can run, to refuse bigger ones at submit."""
        return self.executor.max_resources() if self.executor is not None else None
