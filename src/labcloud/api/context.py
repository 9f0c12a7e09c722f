"""What a running server holds: settings, database, registry, dispatcher. One per process (``app.state``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from labcloud.db.engine import Database
from labcloud.execution.executors.base import Executor
from labcloud.execution.scheduler import Scheduler
from labcloud.ratelimit import LoginThrottle
from labcloud.registry import AppRegistry, bundled_apps_dir
from labcloud.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    db: Database
    login_throttle: LoginThrottle
    apps: AppRegistry
    scheduler: Scheduler | None = None
    executor: Executor | None = field(default=None)

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
        )

    def start_dispatch(self) -> None:
        """Run queued jobs from this process (the embedded default)."""
        from labcloud.execution.executors.local import LocalExecutor

        self.scheduler = Scheduler(self.db, interval_s=self.settings.scheduler_interval_s)
        self.executor = LocalExecutor(self.settings, self.db, self.scheduler.notify)
        self.scheduler.attach(self.executor)
        self.scheduler.start()

    def stop_dispatch(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()

    def notify(self) -> None:
        if self.scheduler is not None:
            self.scheduler.notify()

    def ceiling(self) -> dict[str, float] | None:
        """The largest job this installation can run, to refuse bigger ones at submit."""
        return self.executor.max_resources() if self.executor is not None else None
