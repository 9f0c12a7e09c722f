"""The local executor: jobs run on this machine, each under a detached supervisor, in a sandbox.

Capacity (CPUs, memory) is accounted here; a thread per running job follows it and writes what happens
to the database. Supervisors outlive the server, so after a restart :meth:`recover` re-attaches to them.
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
from typing import Any

import psutil
from sqlalchemy import select
from sqlalchemy.orm import Session

from labcloud import registry
from labcloud.db.engine import Database
from labcloud.db.models import Job
from labcloud.errors import Conflict
from labcloud.execution import outcome, process, runner
from labcloud.execution.executors.base import Executor
from labcloud.execution.process import Handle, ProcessResult
from labcloud.execution.runner import InputSource, JobPlan, StagingError
from labcloud.execution.sandbox import SandboxPolicy, sandbox_problem
from labcloud.services import files
from labcloud.services import jobs as job_service
from labcloud.services.job_states import ACTIVE, FailureReason, JobState
from labcloud.settings import Settings, config_path_from_env
from labcloud.storage.base import Storage

log = logging.getLogger(__name__)
PROGRESS_WRITE_INTERVAL_S = 0.5
CANCEL_POLL_INTERVAL_S = 1.0


class _DbReporter:
    """Tells the database what the runner learns; throttles progress writes."""

    def __init__(self, executor: LocalExecutor, job_id: uuid.UUID) -> None:
        self.executor = executor
        self.job_id = job_id
        self._last_write = 0.0
        self._last_cancel_check = time.monotonic()
        self._pending: float | None = None

    def progress(self, fraction: float) -> None:
        self._pending = fraction
        now = time.monotonic()
        if now - self._last_write >= PROGRESS_WRITE_INTERVAL_S:
            self.flush()
            self._last_write = now

    def flush(self) -> None:
        if self._pending is None:
            return
        fraction, self._pending = self._pending, None
        with self.executor.db.session() as session:
            job = session.get(Job, self.job_id)
            if job is not None and job.state == JobState.RUNNING.value:
                job.progress = fraction

    def cancel_requested(self) -> bool:
        if self.executor.cancel_flag(self.job_id).is_set():
            return True
        now = time.monotonic()
        if now - self._last_cancel_check >= CANCEL_POLL_INTERVAL_S:  # a cancel through another server
            self._last_cancel_check = now
            with self.executor.db.session() as session:
                job = session.get(Job, self.job_id)
                if job is None or job.state == JobState.CANCELLING.value:
                    return True
        return False


class LocalExecutor(Executor):
    name = "local"

    def __init__(
        self, settings: Settings, db: Database, notify: Callable[[], None], storage: Storage
    ) -> None:
        self.settings = settings
        self.db = db
        self.storage = storage
        self.notify = notify
        self.cpus = settings.local_cpus or float(os.cpu_count() or 1)
        self.memory_mb = settings.local_memory_mb or int(psutil.virtual_memory().total / 2**20 * 0.8)
        self._lock = threading.Lock()
        self._held: dict[uuid.UUID, tuple[uuid.UUID, dict[str, Any]]] = {}
        self._cancel: dict[uuid.UUID, threading.Event] = {}
        self._threads: dict[uuid.UUID, threading.Thread] = {}
        self.sandbox_warning = self._check_sandbox()

    # ------------------------------------------------------------------------------------- capacity

    def max_resources(self) -> dict[str, float]:
        return {"cpus": self.cpus, "memory_mb": float(self.memory_mb), "gpus": 0.0}

    def _used(self) -> tuple[float, int]:
        cpus = sum(float(r.get("cpus", 1)) for _, r in self._held.values())
        mem = sum(int(r.get("memory_mb", 0)) for _, r in self._held.values())
        return cpus, mem

    def fits_now(self, resources: dict[str, Any]) -> bool:
        with self._lock:
            cpus, mem = self._used()
        return (
            cpus + float(resources.get("cpus", 1)) <= self.cpus + 1e-9
            and mem + int(resources.get("memory_mb", 0)) <= self.memory_mb
        )

    def wait_reason(self, resources: dict[str, Any]) -> str:
        with self._lock:
            cpus, mem = self._used()
        if not self.fits_now(resources):
            return (
                f"waiting for capacity: needs {resources.get('cpus', 1):g} CPU and "
                f"{resources.get('memory_mb', 0)} MB; {cpus:g} of {self.cpus:g} CPUs and "
                f"{mem} of {self.memory_mb} MB are in use"
            )
        return "waiting for the dispatcher (other users' jobs go first when they have fewer running)"

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

    def submit(self, job_id: uuid.UUID, owner_id: uuid.UUID, resources: dict[str, Any]) -> None:
        self._hold(job_id, owner_id, resources, self._run)

    def _hold(
        self,
        job_id: uuid.UUID,
        owner_id: uuid.UUID,
        resources: dict[str, Any],
        target: Callable[[uuid.UUID], None],
    ) -> None:
        with self._lock:
            self._held[job_id] = (owner_id, resources)
            self._cancel.setdefault(job_id, threading.Event())
            thread = threading.Thread(
                target=self._guarded, args=(target, job_id), name=f"job-{job_id}", daemon=True
            )
            self._threads[job_id] = thread
        thread.start()

    def _guarded(self, target: Callable[[uuid.UUID], None], job_id: uuid.UUID) -> None:
        try:
            target(job_id)
        except Exception as exc:  # never leave a job hanging in an active state
            log.exception("job %s: runner crashed", job_id)
            self._settle_error(
                job_id, FailureReason.SYSTEM_ERROR, f"internal error: {exc.__class__.__name__}: {exc}"
            )
        finally:
            with self._lock:
                self._held.pop(job_id, None)
                self._cancel.pop(job_id, None)
                self._threads.pop(job_id, None)
            self.notify()

    def cancel(self, job_id: uuid.UUID) -> None:
        self.cancel_flag(job_id).set()

    def inputs(self, session: Session, job: Job) -> dict[str, InputSource]:
        """Where each input's files come from; resolved when the job starts, not when it was submitted."""
        inputs = {}
        for slot, raw in job.inputs.items():
            entry = files.resolve_input(session, job.owner_id, raw, ["inputs", slot])
            sources = files.input_files(session, job.owner_id, entry)
            inputs[slot] = InputSource(
                entry.name, [(rel, partial(self.storage.fetch, key)) for rel, key in sources]
            )
        return inputs

    def plan(self, job: Job, inputs: dict[str, InputSource] | None = None) -> JobPlan:
        """What the runner needs; ``inputs`` only for a job that has still to be staged."""
        return JobPlan(
            job_id=str(job.id),
            spec=registry.EntrypointSpec.model_validate(job.spec),
            params=dict(job.params),
            inputs=inputs or {},
            env=dict(job.env),
            resources=dict(job.resources),
            job_dir=job_service.job_dir(self.settings, job.id),
            sandbox=self._policy(job),
            grace_s=self.settings.kill_grace_s,
        )

    def _policy(self, job: Job) -> SandboxPolicy | None:
        if self.settings.sandbox == "off" or (self.settings.sandbox == "auto" and self.sandbox_warning):
            return None
        hidden: list[Path] = [self.settings.home, config_path_from_env()]
        if self.settings.is_sqlite:
            hidden.append(Path(self.settings.effective_database_url.removeprefix("sqlite:///")))
        return SandboxPolicy(
            writable=(job_service.work_dir(self.settings, job.id),),
            hidden=tuple(hidden),
            network=bool(job.spec.get("network", False)),
        )

    def _run(self, job_id: uuid.UUID) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return
            try:
                plan = self.plan(job, self.inputs(session, job))
            except Exception as exc:
                job_service.transition(
                    session, job, JobState.FAILED, reason=FailureReason.STAGING_FAILED, message=_detail(exc)
                )
                return
        plan.job_dir.mkdir(parents=True, exist_ok=True)
        try:
            staged = runner.stage(plan)
        except StagingError as exc:
            runner.append_log(plan, str(exc))
            self._settle_error(job_id, FailureReason.STAGING_FAILED, str(exc))
            return
        if self.cancel_flag(job_id).is_set() or self._state(job_id) == JobState.CANCELLING:
            self._settle(job_id, None, plan)
            return
        offset = runner.log_size(plan)
        try:
            handle = runner.launch(plan, staged)
        except Exception as exc:
            message = f"the job could not be started: {_detail(exc)}"
            runner.append_log(plan, message)
            self._settle_error(job_id, FailureReason.SYSTEM_ERROR, message)
            return
        with self.db.session() as session:
            job = session.get(Job, job_id)
            assert job is not None
            try:
                job_service.transition(session, job, JobState.RUNNING, executor_ref=handle.to_json())
            except Conflict:  # cancelled while staging: stop what was just started
                job.executor_ref = handle.to_json()
                process.cancel(handle)
        self._follow(job_id, plan, handle, offset)

    def _follow(self, job_id: uuid.UUID, plan: JobPlan, handle: Handle, offset: int) -> None:
        reporter = _DbReporter(self, job_id)
        result = runner.follow(plan, handle, reporter, offset)
        reporter.flush()
        self._settle(job_id, result, plan)

    def _state(self, job_id: uuid.UUID) -> JobState | None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            return JobState(job.state) if job else None

    def _settle_error(self, job_id: uuid.UUID, reason: FailureReason, message: str) -> None:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or JobState(job.state) not in ACTIVE:
                return
            if job.state == JobState.CANCELLING.value:
                job_service.transition(session, job, JobState.CANCELLED, message="cancelled")
            else:
                job_service.fail_or_retry(session, job, reason, message)

    def _collect(self, job_id: uuid.UUID, owner_id: uuid.UUID, plan: JobPlan) -> str | None:
        """Move the outputs into the owner's space and drop the work folder; a problem, or None."""
        try:
            files.ingest_outputs(self.db, self.storage, self.settings, owner_id, job_id, plan.output_dir)
        except Exception as exc:
            log.exception("outputs of job %s could not be stored", job_id)
            message = f"the outputs could not be stored: {_detail(exc)}"
            runner.append_log(plan, message)
            return message
        finally:
            shutil.rmtree(plan.work_dir, ignore_errors=True)
        return None

    def _settle(self, job_id: uuid.UUID, result: ProcessResult | None, plan: JobPlan) -> None:
        """Record how the job ended. ``result`` None: it never started (cancelled while staging)."""
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or JobState(job.state) not in ACTIVE:
                return
            owner_id = job.owner_id
            if outcome.succeeded(result):
                outcome.start_finishing(session, job)
        problem = None
        if result is not None and result.outcome != "lost":
            problem = self._collect(job_id, owner_id, plan)
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is not None:
                outcome.record_end(session, job, result, problem)

    # ------------------------------------------------------------------------------------- restarts

    def recover(self) -> None:
        with self.db.session() as session:
            stmt = select(Job).where(Job.state.in_([s.value for s in ACTIVE]), Job.executor == self.name)
            jobs = list(session.scalars(stmt))
        for job in jobs:
            with self._lock:
                followed = job.id in self._held
            if not followed:  # a server that leads again already follows the jobs it started
                self._recover_one(job)

    def _recover_one(self, job: Job) -> None:
        handle = Handle.from_json(job.executor_ref) if job.executor_ref else None
        plan_dir = job_service.job_dir(self.settings, job.id)
        if handle is not None and process.is_alive(handle):
            log.info("job %s: re-attached to its running process", job.id)
            plan = self.plan(job)
            offset = runner.log_size(plan)
            self._hold(
                job.id, job.owner_id, dict(job.resources), lambda jid: self._follow(jid, plan, handle, offset)
            )
            return
        result = process.read_result(plan_dir / "status.json") if handle is not None else None
        if result is not None:
            log.info("job %s: ended while the server was down (%s)", job.id, result.outcome)
            self._settle(job.id, result, self.plan(job))
            return
        log.warning("job %s: its process is gone (server restart)", job.id)
        self._settle_error(
            job.id, FailureReason.WORKER_LOST, "the job's process was lost when the server stopped"
        )

    # ------------------------------------------------------------------------------------- setup

    def _check_sandbox(self) -> str | None:
        if self.settings.sandbox == "off":
            return "sandbox is off (LABCLOUD_SANDBOX=off): jobs can see the data dir"
        problem = sandbox_problem()
        if problem and self.settings.sandbox == "required":
            raise RuntimeError(f"LABCLOUD_SANDBOX=required but bubblewrap does not work: {problem}")
        if problem:
            log.warning("jobs run WITHOUT a sandbox: %s (install Debian's bubblewrap)", problem)
        return problem


def _detail(exc: BaseException) -> str:
    return getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__
