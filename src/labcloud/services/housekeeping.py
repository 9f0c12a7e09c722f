"""Periodic cleaning: expired resumable and direct uploads, temporary files a crash left behind, stored
objects that no file refers to, devices' history samples older than they are kept, used single sign-on
tokens past their expiry, and retention (at most once per ``retention_every_h``). Runs in the process that
dispatches jobs."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta

from labcloud.db.engine import Database
from labcloud.db.types import utcnow
from labcloud.execution.loops import Loop
from labcloud.registry import AppRegistry
from labcloud.services import (
    audit,
    devices,
    direct_uploads,
    file_store,
    retention,
    sso,
    uploads,
    usage_stats,
)
from labcloud.settings import Settings
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)
ORPHAN_AGE = timedelta(hours=1)  # older than any upload that is between storing and indexing


@dataclass
class Report:
    uploads_expired: int = 0
    direct_uploads_expired: int = 0
    temporary_files_removed: int = 0
    orphans_removed: int = 0
    samples_pruned: int = 0
    retention_deletions: int = 0
    usage_sampled: int = 0  # today's storage sample for the usage statistics, brought up to date
    audit_events_pruned: int = 0
    sso_tokens_forgotten: int = 0  # used ID tokens past their expiry (a replay is refused by expiry then)
    problems: list[str] = field(default_factory=list)


def run_once(
    db: Database,
    storage: Storage,
    settings: Settings,
    *,
    orphan_age: timedelta = ORPHAN_AGE,
    apps: AppRegistry | None = None,
) -> Report:
    """One round; each task on its own, so one failing (the store unreachable) doesn't stop the others."""
    report = Report()
    tasks = [
        ("uploads_expired", lambda: uploads.expire(db, settings, utcnow())),
        ("direct_uploads_expired", lambda: direct_uploads.expire(db, storage)),
        ("temporary_files_removed", lambda: _remove_stale_temporaries(settings)),
        ("orphans_removed", lambda: file_store.sweep_orphans(db, storage, orphan_age)),
        ("samples_pruned", lambda: devices.prune(db, settings)),
        ("usage_sampled", lambda: usage_stats.sample(db)),
        ("audit_events_pruned", lambda: audit.prune(db.engine, settings.audit_keep_days)),
        ("sso_tokens_forgotten", lambda: sso.forget_used(db.engine)),
    ]
    if apps is not None:
        tasks.append(("retention_deletions", lambda: retention.run_if_due(db, storage, settings, apps)))
    for name, task in tasks:
        try:
            setattr(report, name, task())
        except Exception as exc:
            log.warning("housekeeping: %s failed: %s", name, exc)
            report.problems.append(f"{name}: {exc}")
    return report


def _remove_stale_temporaries(settings: Settings) -> int:
    """Bodies of plain uploads that a killed server never finished (live ones are minutes old at most)."""
    folder = settings.uploads_dir / "put"
    if not folder.is_dir():
        return 0
    limit = time.time() - settings.upload_expiry_hours * 3600
    removed = 0
    for path in folder.iterdir():
        if path.is_file() and path.stat().st_mtime < limit:
            path.unlink(missing_ok=True)
            removed += 1
    return removed


class Housekeeper(Loop):
    """A round at once, then every ``housekeeping_interval_s`` (on the leader)."""

    def __init__(
        self, db: Database, storage: Storage, settings: Settings, apps: AppRegistry | None = None
    ) -> None:
        super().__init__("housekeeping", settings.housekeeping_interval_s, step_first=True)
        self.db, self.storage, self.settings, self.apps = db, storage, settings, apps

    def step(self) -> None:
        report = run_once(self.db, self.storage, self.settings, apps=self.apps)
        cleaned = (
            report.uploads_expired
            + report.direct_uploads_expired
            + report.temporary_files_removed
            + report.orphans_removed
            + report.samples_pruned
            + report.retention_deletions
            + report.audit_events_pruned
        )
        if cleaned:
            log.info("housekeeping: %s", report)
