"""The composition root: what a running server holds (settings, database, registry, store, executors,
leadership), made once per process, and the commands that change jobs and workers.

A command is a change someone else must hear about: it commits, then tells them (the dispatchers here and
on the other replicas, waiting claims, the job's executor). Routers and pages call these commands; they
never commit and wake on their own. Reads go to the services directly.
"""

from __future__ import annotations

import logging
import sys
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from labcloud.db import migrate
from labcloud.db.engine import Database
from labcloud.db.models import Job, JobGroup, User, Worker
from labcloud.execution import containers, engine_probe
from labcloud.execution.executors import PLUGINS, plugin_class
from labcloud.execution.executors.base import Executor
from labcloud.execution.leader import Leadership
from labcloud.execution.scheduler import Scheduler
from labcloud.execution.wakeups import Waker, Wakeups
from labcloud.ratelimit import LoginThrottle
from labcloud.registry import AppRegistry, bundled_apps_dir
from labcloud.services import audit, device_sessions, maintenance, sweeps
from labcloud.services import jobs as job_service
from labcloud.services import tes as tes_service
from labcloud.services import users as user_service
from labcloud.services import workers as worker_service
from labcloud.services.backup import ScheduledBackups
from labcloud.services.claim_waits import QueueWatch
from labcloud.services.device_schemas import SchemaCache
from labcloud.services.heartbeats import HeartbeatWriter
from labcloud.services.housekeeping import Housekeeper
from labcloud.services.job_states import JobState
from labcloud.services.mail import MailSender
from labcloud.services.projects import Action
from labcloud.services.webhook_sender import WebhookSender
from labcloud.settings import Settings
from labcloud.storage import open_storage
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)
MANAGE = Action.MANAGE  # what changing a job takes (its owner may always; else a manager of its project)


@dataclass
class Runtime:
    settings: Settings
    db: Database
    login_throttle: LoginThrottle
    apps: AppRegistry
    storage: Storage
    schedulers: list[Scheduler] = field(default_factory=list)
    housekeeper: Housekeeper | None = None
    backups: ScheduledBackups | None = None  # scheduled backups (backup_dest), on the leader
    webhook_sender: WebhookSender | None = None
    mail_sender: MailSender | None = None
    executors: dict[str, Executor] = field(default_factory=dict)
    leadership: Leadership | None = None
    wakeups: Wakeups | None = None
    # Wakes what waits for new work in this process's event loops: remote workers' long-polling claims.
    waker: Waker = field(default_factory=Waker)
    # The devices' status schemas, compiled, for heartbeats (read again every device_schema_cache_s).
    device_schemas: SchemaCache = field(default_factory=SchemaCache)
    _heartbeats: HeartbeatWriter | None = None
    _queue_watch: QueueWatch | None = None

    @classmethod
    def create(cls, settings: Settings) -> Runtime:
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
        self.queue_watch.start()

    @property
    def queue_watch(self) -> QueueWatch:
        """Whether pull jobs wait, for the claims waiting here, and their one recheck (started with
        dispatch)."""
        if self._queue_watch is None:
            self._queue_watch = QueueWatch(self.db, self.waker)
        return self._queue_watch

    @property
    def heartbeats(self) -> HeartbeatWriter:
        """Writes remote workers' heartbeats, together (made with the first one)."""
        if self._heartbeats is None:
            self._heartbeats = HeartbeatWriter(self.db, self.settings, self.device_schemas)
        return self._heartbeats

    def stop_dispatch(self) -> None:
        if self._queue_watch is not None:
            self._queue_watch.stop()
        if self._heartbeats is not None:
            self._heartbeats.close()
        if self.leadership is not None:
            self.leadership.stop()
        if self.wakeups is not None:
            self.wakeups.stop()

    def _lead(self) -> None:
        for executor in self.executors.values():
            executor.recover()
            executor.start()
            if executor.dispatched:
                scheduler = Scheduler(
                    self.db,
                    executor,
                    interval_s=self.settings.scheduler_interval_s,
                    half_life_h=self.settings.fair_share_half_life_h,
                )
                scheduler.start()
                self.schedulers.append(scheduler)
        self.housekeeper = Housekeeper(self.db, self.storage, self.settings, self.apps)
        self.housekeeper.start()
        if self.settings.backup_dest:
            self.backups = ScheduledBackups(self.settings)
            self.backups.start()
        self.webhook_sender = WebhookSender(self.db, self.settings)
        self.webhook_sender.start()
        self.mail_sender = MailSender(self.db, self.settings)  # (mail, and chat channels without it)
        self.mail_sender.start()

    def _step_down(self) -> None:
        for scheduler in self.schedulers:
            scheduler.stop()
        self.schedulers = []
        for executor in self.executors.values():
            executor.shutdown()
        if self.housekeeper is not None:
            self.housekeeper.stop()
            self.housekeeper = None
        if self.backups is not None:
            self.backups.stop()
            self.backups = None
        if self.webhook_sender is not None:
            self.webhook_sender.stop()
            self.webhook_sender = None
        if self.mail_sender is not None:
            self.mail_sender.stop()
            self.mail_sender = None

    def notify(self) -> None:
        """There is new work (or room for it): wake the dispatchers and waiting claims, here and on every
        other replica of this database.

        A wake that fails costs only the wait until the next round (``scheduler_interval_s``, a claim's
        poll), as telling the other replicas does: it is logged, never raised. The callers have committed
        by then; a command is answered as done, and a client does not send the same job again."""
        try:
            self._wake_here()
        except Exception:
            log.exception("waking the dispatchers and waiting claims failed")
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

    def container_engine(self) -> tuple[containers.Engine | None, str]:
        """This server's container engine, or None and why there is none."""
        return engine_probe.probe(*self.settings.container_settings()).get()

    def container_problem(self) -> str | None:
        """Why container apps cannot run here, or None: this machine's engine answers, or jobs go to remote
        workers by default (their executor says so) and a live one has an engine."""
        engine, problem = self.container_engine()
        if engine is not None:
            return None
        default = self._executor_class(self.settings.executor)
        if default is not None and default.engines_on_workers:
            with self.db.session() as session:
                if worker_service.container_workers(session, self.settings):
                    return None
            return f"{problem}; and no connected worker has a container engine"
        return problem

    def _executor_class(self, name: str) -> type[Executor] | None:
        """The plugin that runs the jobs routed to ``name``: the loaded one's class, or (on a server that
        does not dispatch) the class the plugin list names; None for a name it does not know."""
        found = self.executors.get(name)
        if found is not None:
            return type(found)
        return plugin_class(name) if name in PLUGINS else None

    def message(self, job: Job) -> str:
        """A job's message as its owner sees it: a queued first attempt says why it waits; a retry says
        which attempt comes next (its message), whatever the executor thinks of capacity."""
        if job.state == JobState.QUEUED and job.attempts == 0:
            return self.wait_reason(job) or job.message
        return job.message

    # ------------------------------------------------------------------------------------- commands

    def submit(
        self,
        session: Session,
        user: User,
        sub: job_service.Submission,
        known: list[dict[str, Any]] | None = None,
    ) -> Job:
        """Queue a job (every problem of the submission at once, with the ``known`` ones a form found
        before, else InvalidInput); 503 in maintenance."""
        maintenance.refuse_new_work(self.db.engine)
        job = job_service.submit(
            session, self.settings, self.apps, user, sub, ceiling=self.ceiling, known=known or ()
        )
        self._done(session)
        return job

    def rerun(
        self,
        session: Session,
        user: User,
        job_id: uuid.UUID,
        image: job_service.RerunImage = "pinned",
        inputs: job_service.RerunInputs = "original",
    ) -> Job:
        """The same job again, as a new one (a GA4GH TES task: the same task, as a new one): with the
        inputs' content it ran with, or the ``current`` content of their paths; a container job's with the
        image it ran, or with the ``current`` one its reference names."""
        maintenance.refuse_new_work(self.db.engine)
        job = job_service.get_job(session, user, job_id)
        if job.app == tes_service.APP:
            new = tes_service.rerun(session, self.settings, user, job, self.ceiling)
        else:
            new = job_service.rerun(
                session, self.settings, self.apps, user, job, ceiling=self.ceiling, image=image, inputs=inputs
            )
        self._done(session)
        return new

    def submit_task(self, session: Session, user: User, body: Any) -> uuid.UUID:
        """Queue a GA4GH TES task (refused with 400 when it is not valid); its id. Once it is stored, nothing
        after the commit may fail the request: a client would create it again."""
        maintenance.refuse_new_work(self.db.engine)
        job_id = tes_service.create(session, self.settings, user, body, self.ceiling).id
        self._done(session)
        return job_id

    def cancel(self, session: Session, user: User, job_id: uuid.UUID) -> Job:
        """Cancel a job: a queued one at once; one that runs becomes ``cancelling`` and its executor
        stops it."""
        job = job_service.cancel(session, job_service.get_job(session, user, job_id, MANAGE))
        session.commit()
        found = self.executors.get(job.executor)
        if found is not None:
            found.cancel(job.id)
        return job

    def start_session(
        self,
        session: Session,
        user: User,
        req: device_sessions.SessionRequest,
        known: list[dict[str, Any]] | None = None,
        commit: bool = True,
    ) -> JobGroup:
        """Queue a session's jobs, one per device, all or none (every problem at once, with the ``known``
        ones a form found before); ``commit`` false only checks it (the caller rolls it back)."""
        maintenance.refuse_new_work(self.db.engine)
        group = device_sessions.start(
            session, self.settings, self.apps, user, req, ceiling=self.ceiling, known=known or ()
        )
        if commit:
            self._done(session)
        return group

    def cancel_session(self, session: Session, user: User, group_id: uuid.UUID) -> JobGroup:
        """Cancel every part of a session that has not ended (each as :meth:`cancel` would, by whoever may
        manage it); what was already over stays as it was."""
        group = device_sessions.get(session, user, group_id)
        cancelled = []
        for job in device_sessions.active_jobs(session, group):
            job_service.get_job(
                session, user, job.id, MANAGE
            )  # Forbidden for another member's, unless manager
            cancelled.append(job_service.cancel(session, job))
        session.commit()
        for job in cancelled:
            found = self.executors.get(job.executor)
            if found is not None:
                found.cancel(job.id)
        return group

    def submit_sweep(self, session: Session, user: User, req: sweeps.SweepRequest) -> JobGroup:
        """Queue every job of a sweep, all or none, in one transaction; the dispatchers are woken once."""
        maintenance.refuse_new_work(self.db.engine)
        group = sweeps.submit(session, self.settings, self.apps, user, req, ceiling=self.ceiling)
        self._done(session)
        return group

    def cancel_sweep(self, session: Session, user: User, group_id: uuid.UUID) -> JobGroup:
        """Cancel every job of a sweep that has not ended (by whoever may manage its jobs)."""
        group = sweeps.get(session, user, group_id)
        active = sweeps.active_ids(session, group)
        if active:  # (a sweep's jobs are all its owner's, in its project: one check for all)
            job_service.get_job(session, user, active[0], MANAGE)
        cancelled = sweeps.cancel_all(session, active)
        session.commit()
        for job in cancelled:
            found = self.executors.get(job.executor)
            if found is not None and job.state == JobState.CANCELLING:
                found.cancel(job.id)
        return group

    def delete_job(self, session: Session, user: User, job_id: uuid.UUID) -> None:
        job_service.delete(session, self.settings, job_service.get_job(session, user, job_id, MANAGE))
        session.commit()

    def revoke_worker(self, session: Session, worker_id: uuid.UUID) -> Worker:
        """The worker's token stops working at once; its jobs are queued again (or failed)."""
        worker = worker_service.revoke(session, worker_service.get(session, worker_id))
        audit.record(session, "worker.revoked", "worker", worker.id, {"name": worker.name})
        self._done(session)
        return worker

    def _done(self, session: Session) -> None:
        """Commit, then wake the dispatchers (which never fails the command: see :meth:`notify`)."""
        session.commit()  # visible to the dispatchers before they are woken
        self.notify()


# --- starting up ---------------------------------------------------------------------------------------


class SchemaOutOfDate(RuntimeError):
    pass


def prepare_database(ctx: Runtime) -> None:
    """SQLite is migrated on start; PostgreSQL must be migrated explicitly with ``labcloud db upgrade``. A
    database a newer release migrated is served as it is (expand first, contract a release later)."""
    newer = migrate.newer_revision(ctx.settings, ctx.db.engine)
    if newer is not None:
        log.warning(
            "the database schema (%s) is newer than this release's (%s): serving as an older replica while "
            "the upgrade rolls out",
            newer,
            migrate.head_revision(ctx.settings),
        )
    elif ctx.settings.is_sqlite:
        migrate.upgrade(ctx.settings)
    elif not migrate.is_up_to_date(ctx.settings, ctx.db.engine):
        raise SchemaOutOfDate(
            "The database schema is not up to date: run 'labcloud db upgrade' with the same configuration."
        )
    with ctx.db.session() as session:
        admin = user_service.ensure_initial_admin(session, ctx.settings)
    if admin is not None:
        announce_initial_admin(admin, ctx.settings)


def database_location(settings: Settings) -> str:
    """Where the accounts and jobs are kept, for people: the SQLite file, or the URL without its password."""
    url = make_url(settings.effective_database_url)
    if settings.is_sqlite and url.database:
        return url.database
    return url.difference_update_query(["password"]).render_as_string(hide_password=True)


def announce_initial_admin(admin: user_service.InitialAdmin, settings: Settings) -> None:
    """Printed once, to the console and not to the log, when the first admin is created."""
    lines = ["", "labcloud: created the first administrator account.", f"  email:    {admin.email}"]
    if admin.password is not None:
        lines.append(f"  password: {admin.password}")
    else:
        lines.append("  password: the initial_admin_password of your configuration")
    lines += [
        f"  data dir: {settings.home}",
        f"  database: {database_location(settings)}",
        f"  log in at {settings.public_url}/ in a browser, or with 'labcloud login'.",
        "  Change the password after logging in; this message is not shown again.",
        "",
    ]
    print("\n".join(lines), file=sys.stderr, flush=True)
