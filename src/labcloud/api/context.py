"""What a running server holds: settings, database, registry, dispatcher. One per process (``app.state``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from labcloud.db.engine import Database
from labcloud.execution.executors.base import Executor
from labcloud.execution.executors.pull import PullExecutor
from labcloud.execution.scheduler import Scheduler
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
        """Run queued jobs from this process (the embedded default), and watch remote workers' leases."""
        from labcloud.execution.executors.local import LocalExecutor

        if self.settings.executor == "local":
            self.scheduler = Scheduler(self.db, interval_s=self.settings.scheduler_interval_s)
            self.executor = LocalExecutor(self.settings, self.db, self.scheduler.notify, self.storage)
            self.scheduler.attach(self.executor)
            self.scheduler.start()
        self.pull.start()
        self.housekeeper = Housekeeper(self.db, self.storage, self.settings)
        self.housekeeper.start()

    def stop_dispatch(self) -> None:
        self.pull.stop()
        if self.scheduler is not None:
            self.scheduler.stop()
        if self.housekeeper is not None:
            self.housekeeper.stop()

    def notify(self) -> None:
        if self.scheduler is not None:
            self.scheduler.notify()
        self.pull.notify()

    def ceiling(self) -> dict[str, float] | None:
        """The largest job this installation can run, to refuse bigger ones at submit."""
        return self.executor.max_resources() if self.executor is not None else None
