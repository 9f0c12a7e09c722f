"""What a running server holds: settings, database, throttles. One per process, on ``app.state``."""

from __future__ import annotations

from dataclasses import dataclass

from labcloud.db.engine import Database
from labcloud.ratelimit import LoginThrottle
from labcloud.settings import Settings


@dataclass
class AppContext:
    settings: Settings
    db: Database
    login_throttle: LoginThrottle

    @classmethod
    def create(cls, settings: Settings) -> AppContext:
        return cls(
            settings=settings,
            db=Database(settings),
            login_throttle=LoginThrottle(settings.login_max_failures, settings.login_window_seconds),
        )
