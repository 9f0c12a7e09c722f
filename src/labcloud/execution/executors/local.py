"""The local executor: jobs run on this machine, through the one runner, each under a detached supervisor.

What is local here is admission (CPUs and memory in use) and one thread per running job, which runs the
job through the runner with a :class:`~labcloud.execution.db_reporter.DatabaseReporter` and, once the job
ended and its resources are given back, wakes the dispatchers. Supervisors outlive the server, so after a
restart :meth:`recover` finds them again by their attempt's folder (no record in the database is needed
for that) and takes the jobs up where they are.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Callable
from functools import partial
from pathlib import Path

import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud import registry
from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.errors import LabcloudError
from labcloud.execution import container_run, engine_probe, process, runner
from labcloud.execution.attempt import AttemptDir
from labcloud.execution.db_reporter import DatabaseReporter
from labcloud.execution.executors.base import Executor
from labcloud.execution.runner import InputSource, JobPlan
from labcloud.execution.sandbox import SandboxPolicy, resolve_sandboxing
from labcloud.registry.spec_parts import Resources
from labcloud.services import job_inputs, lifecycle, tes_run
from labcloud.services import jobs as job_service
from labcloud.services.job_checks import amount
from labcloud.services.job_states import ACTIVE, FailureReason, JobState
from labcloud.settings import Settings, config_path_from_env
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)


END_RETRY_MAX_S = 5.0  # the longest wait between tries to record a crashed runner's end


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self, settings: Settings, db: Database, notify: Callable[[], None], storage: Storage
    ) -> None:
        super().__init__(settings, db, notify, storage)
        self.cpus = settings.local_cpus or float(os.cpu_count() or 1)
        self.memory_mb = settings.local_memory_mb or int(psutil.virtual_memory().total / 2**20 * 0.8)
        self._lock = threading.Lock()
        self._held: dict[uuid.UUID, tuple[uuid.UUID, Resources]] = {}
        self._cancel: dict[uuid.UUID, threading.Event] = {}
        self._threads: dict[uuid.UUID, threading.Thread] = {}
        self._detach = threading.Event()  # set when this server stops leading: runners let go of their jobs
        self.sandboxing = resolve_sandboxing(settings.sandbox, settings.job_user)
        process.LAUNCHER.enabled = settings.warm_launcher
        self.engines = engine_probe.probe(*settings.container_settings())
        log.log(
            logging.ERROR if self.sandboxing.refuse else logging.INFO,
            "local jobs run %s",
            self.sandboxing.describe(),
        )

    # ------------------------------------------------------------------------------------- capacity

    def max_resources(self) -> dict[str, float]:
        return {"cpus": self.cpus, "memory_mb": float(self.memory_mb), "gpus": 0.0}

    def _used(self) -> tuple[float, int]:
        cpus = sum(r.cpus for _, r in self._held.values())
        mem = sum(r.memory_mb for _, r in self._held.values())
        return cpus, mem

    def _free(self) -> dict[str, float]:
        with self._lock:
            cpus, mem = self._used()
        return {"cpus": self.cpus - cpus, "memory_mb": float(self.memory_mb - mem), "gpus": 0.0}

    def fits_now(self, resources: Resources) -> bool:
        return resources.fits_in(self._free())

    def wait_reason(self, job: Job) -> str:
        resources = job.resources
        with self._lock:
            cpus, mem = self._used()
        if not self.fits_now(resources):
            return (
                f"waiting for capacity: needs {amount(resources.cpus, 'cpus')} and "
                f"{resources.memory_mb} MB; {cpus:g} of {amount(self.cpus, 'cpus')} and "
                f"{mem} of {self.memory_mb} MB are in use"
            )
        return (
            "waiting for the dispatcher (other users' jobs go first when they have fewer running, or when "
            "their project has used less lately: fair share)"
        )

    def running_per_owner(self) -> dict[uuid.UUID, int]:
        counts: dict[uuid.UUID, int] = {}
        with self._lock:
            for owner, _ in self._held.values():
                counts[owner] = counts.get(owner, 0) + 1
        return counts

    def cancel_flag(self, job_id: uuid.UUID) -> threading.Event:
        with self._lock:
            return self._cancel.setdefault(job_id, threading.Event())

    # ------------------------------------------------------------------------------------- running

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: Resources) -> None:
        self._hold(job_id, owner_id, resources, self._run)

    def cancel(self, job_id: uuid.UUID) -> None:
        self.cancel_flag(job_id).set()

    def _hold(
        self,
        job_id: uuid.UUID,
        owner_id: uuid.UUID,
        resources: Resources,
        target: Callable[[uuid.UUID], None],
    ) -> None:
        thread = threading.Thread(
            target=self._guarded, args=(target, job_id), name=f"job-{job_id}", daemon=True
        )
        with self._lock:
            self._held[job_id] = (owner_id, resources)
            self._cancel.setdefault(job_id, threading.Event())
            self._threads[job_id] = thread
        thread.start()

    def _guarded(self, target: Callable[[uuid.UUID], None], job_id: uuid.UUID) -> None:
        try:
            target(job_id)
        except Exception as exc:  # never leave a job hanging in an active state
            log.exception("job %s: runner crashed", job_id)
            self._end_crashed(job_id, f"internal error: {type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._held.pop(job_id, None)
                self._cancel.pop(job_id, None)
                self._threads.pop(job_id, None)
            # Once per job end, after its resources are given back: a queued job may fit now (also this
            # one, queued again after a lost run), here and on the other replicas.
            self.notify()

    def _end_crashed(self, job_id: uuid.UUID, message: str) -> None:
        """Fail (or queue again) a job whose runner crashed. What made it crash (the database gone, full or
        locked) may fail this write too: it is tried again until it commits, while the job's resources stay
        held, so the job is never left active with nobody following it. Only a server that stops gives up
        (the next one takes the job up on start)."""
        stopping = self._detach
        delay = 0.1
        while True:
            try:
                with self.db.session() as session:
                    job = session.get(Job, job_id)
                    if job is not None:
                        lifecycle.end_without_report(session, job, FailureReason.SYSTEM_ERROR, message)
                return
            except Exception as exc:
                if stopping.is_set():
                    log.error("job %s: its end was not recorded (%s); the next start ends it", job_id, exc)
                    return
                log.warning("job %s: recording its end failed (%s); again in %.1f s", job_id, exc, delay)
            stopping.wait(delay)
            delay = min(delay * 2, END_RETRY_MAX_S)

    def _run(self, job_id: uuid.UUID) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or job.state not in (JobState.STAGING, JobState.CANCELLING):
                return
            plan = self._plan(job)
            reporter = self._reporter(job)
            cancelled = job.state == JobState.CANCELLING  # between its hand-over and now: ended here
            problem: str | None = None
            try:
                if not cancelled:
                    plan.inputs = self._inputs(session, job)
                    reporter.outputs = self._task(session, job, plan, inputs=True)
            except LabcloudError as exc:
                problem = f"the inputs could not be staged: {exc.detail}"
        _clear_earlier_attempts(plan.folder.path)
        if cancelled:
            runner.cancelled_before_start(plan, reporter)
        elif problem is not None:
            runner.unplanned(reporter, problem, plan)
        else:
            runner.run(plan, reporter)

    def _reporter(self, job: Job) -> DatabaseReporter:
        """The runner's reporter for the job's current attempt, with the attempt's cancel check."""
        return DatabaseReporter(self.settings, self.db, self.storage, job, self.cancel_flag(job.id).is_set)

    def _inputs(self, session: Session, job: Job) -> dict[str, InputSource]:
        """Where each input's files come from: the content pinned when the job was submitted."""
        return {
            slot: InputSource(
                staged.name, [(row.rel, partial(self.storage.fetch, row.blob_key)) for row in staged.files]
            )
            for slot, staged in job_inputs.for_staging(session, job).items()
        }

    def _task(self, session: Session, job: Job, plan: JobPlan, inputs: bool) -> tes_run.TaskOutputs | None:
        """A task's layout on its plan (with where its inputs come from, when staging), and where its
        outputs go; None for a job that is no task."""
        row = tes_run.task_row(session, job)
        if row is None:
            return None
        plan.task = tes_run.layout(session, self.settings, self.storage, job, row, inputs=inputs)
        return tes_run.TaskOutputs(self.settings, row, plan.task)

    def _plan(self, job: Job) -> JobPlan:
        """What the runner needs for the job's current attempt (inputs are added when staging)."""
        folder = AttemptDir(
            job_service.job_dir(self.settings, job.id) / f"attempt-{job.attempts}",
            self.sandboxing.user,
            reach_from=None if self.sandboxing.enabled else self.settings.home,
        )
        plan = JobPlan(
            job_id=str(job.id),
            attempt=job.attempts,
            spec=registry.stored_entrypoint(job.spec),
            params=dict(job.params),
            inputs={},
            env=dict(job.env),
            resources=job.resources,
            folder=folder,
            log_path=job_service.log_path(self.settings, job.id),
            log_times=True,
            sandbox=self._policy(job) if self.sandboxing.enabled else None,
            grace_s=self.settings.kill_grace_s,
            detach=self._detach,
            image=job.image,
            refused=self.sandboxing.refusal,
        )
        if plan.in_container:
            plan.engine, plan.engine_problem = self.engines.get()
        return plan

    def _policy(self, job: Job) -> SandboxPolicy:
        hidden: list[Path] = [self.settings.home, config_path_from_env()]
        if self.settings.is_sqlite:
            hidden.append(Path(self.settings.effective_database_url.removeprefix("sqlite:///")))
        return SandboxPolicy(
            writable=(),
            hidden=tuple(hidden),
            network=bool(job.spec.get("network", False)),
            user=self.sandboxing.user,
        )

    # ------------------------------------------------------------------------------------- restarts

    def shutdown(self) -> None:
        """Stop following the jobs (their supervisors run on): whoever leads next takes them up again.
        A runner in the middle of a database write finishes it first."""
        super().shutdown()
        self._detach.set()
        with self._lock:
            threads = list(self._threads.values())
        deadline = time.monotonic() + 10
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        process.LAUNCHER.stop()

    def recover(self) -> None:
        """Take up every local job that was active when the last server stopped: running ones where they
        are, finished ones from their recorded result, lost ones are retried or failed."""
        if self._detach.is_set():  # this server led before and let go of its jobs: it follows them again
            self._detach = threading.Event()
        with self.db.session() as session:
            stmt = select(Job).where(Job.state.in_(list(ACTIVE)), Job.executor == self.name)
            jobs = list(session.scalars(stmt))
        self._sweep_containers()
        for job in jobs:
            with self._lock:
                followed = job.id in self._held
            if not followed:  # a server that leads again already follows the jobs it started
                plan, reporter = self._plan(job), self._reporter(job)
                with self.db.session() as session:
                    reporter.outputs = self._task(session, job, plan, inputs=False)
                log.info("job %s (%s): taking it up again after a restart", job.id, job.state)
                self._hold(job.id, job.owner_id, job.resources, partial(_resume, plan, reporter))

    def _sweep_containers(self) -> None:
        """Remove the containers labcloud started on this machine's engine whose attempt is over (their
        supervisor died with them unseen, e.g. the machine rebooted). A running attempt's is left alone,
        whoever runs it (a worker may share the engine)."""
        engine, _ = self.engines.get()
        if engine is None:
            return
        found = {name: container_run.parse_name(name) for name in engine.labelled()}
        ids = {uuid.UUID(ref[0]) for ref in found.values() if ref is not None and _is_uuid(ref[0])}
        if not ids:
            return
        with self.db.session() as session:
            rows = session.execute(select(Job.id, Job.state, Job.attempts).where(Job.id.in_(ids)))
            current = {str(i): attempts for i, state, attempts in rows if state in ACTIVE}
        for name, ref in found.items():
            if ref is not None and current.get(ref[0]) != ref[1]:
                log.info("removing container %s: its attempt is over", name)
                engine.remove(name)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _resume(plan: JobPlan, reporter: DatabaseReporter, _job_id: uuid.UUID) -> None:
    runner.resume(plan, reporter)


def _clear_earlier_attempts(folder: Path) -> None:
    """Earlier attempts' folders (their supervisors are gone: the job would not be queued again otherwise)."""
    parent = folder.parent
    if not parent.is_dir():
        return
    for entry in parent.iterdir():
        if entry.name.startswith("attempt-") and entry != folder and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)
