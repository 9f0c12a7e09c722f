"""The worker agent: heartbeats, claims what fits, runs each job in its own thread, stops cleanly.

Threads: the heartbeat (every ``heartbeat_interval_s`` the server asks for; it carries the jobs held and
brings back cancels and aborts), the claimer (one long-polling claim at a time while capacity is free),
and one per job (:class:`~labcloud.worker.job.JobRun`). The main thread waits for signals:
the first SIGTERM/SIGINT stops claiming and lets running jobs finish, the second cancels them, the third
exits at once.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
import time
from types import FrameType
from typing import Any

import httpx

from labcloud import __version__
from labcloud.execution import engine_options, process
from labcloud.execution.engine_probe import EngineProbe
from labcloud.execution.sandbox import Sandboxing, resolve_sandboxing
from labcloud.settings import ContainerSettings
from labcloud.worker import engines, resume, telemetry, workdir
from labcloud.worker.api import Abandoned, Backoff, TokenRejected, Unreachable, WorkerApi, WorkerApiError
from labcloud.worker.config import (
    EXIT_OK,
    EXIT_REVOKED,
    EXIT_UNREACHABLE,
    REVOKED_MESSAGE,
    StartupError,
    WorkerConfig,
)
from labcloud.worker.job import JobRun, RunSettings

log = logging.getLogger(__name__)


DEFAULT_HEARTBEAT_S = 5.0


CLAIM_MOST = 16  # jobs one claim may take (as many as fit in what is free; the server's most)
BUSY_CLAIM_WAIT_S = 5.0  # a claim made while jobs run waits less: their end frees capacity it cannot see


FIT_EPSILON = 1e-9


class WorkerAgent:
    def __init__(self, config: WorkerConfig) -> None:
        self.config = config
        self.api = WorkerApi(config.server)
        self.jobs_dir = config.work_dir / "jobs"
        self._cond = threading.Condition()
        self._runs: dict[tuple[str, int], JobRun] = {}
        self.stopping = threading.Event()  # no more claims
        self.revoked = threading.Event()
        self._quit = threading.Event()  # ends the heartbeat thread
        self.draining = False
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_S
        self.lease_seconds: float | None = None
        self.sandboxed = False
        self.sandboxing: Sandboxing = Sandboxing(False, None, None, refuse=False)
        self.engines: EngineProbe | None = None
        self.engine_report = engines.EngineReport(None)
        self.signals = 0
        self.completed = 0
        self.status_problems: list[dict[str, Any]] = []  # what the server last found wrong with our status
        self._lock_fd: int | None = None
        self._threads: list[threading.Thread] = []

    # ------------------------------------------------------------------------------------- capacity

    def held(self) -> list[JobRun]:
        with self._cond:
            return list(self._runs.values())

    def free(self) -> dict[str, float]:
        with self._cond:
            free = self.config.capacity()
            for run in self._runs.values():
                for key, value in run.resources.items():
                    free[key] = free.get(key, 0.0) - value
        return {k: round(max(0.0, v), 6) for k, v in free.items()}

    def _has_room(self, free: dict[str, float]) -> bool:
        """Room for some job: a CPU share and memory left (the server picks one that fits)."""
        return free["cpus"] > FIT_EPSILON and free["memory_mb"] > FIT_EPSILON

    # ------------------------------------------------------------------------------------- life

    def run(self) -> int:
        """Run until stopped; the process exit code."""
        try:
            self._prepare()
            self._first_heartbeat()
            self._take_up_leftovers()
        except StartupError as exc:
            log.error("%s", exc)
            self._release_lock()
            self.api.close()
            return exc.code
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self._on_signal)
            signal.signal(signal.SIGINT, self._on_signal)
        self._spawn(self._heartbeat_loop, "heartbeat")
        self._spawn(self._claim_loop, "claim")
        try:
            with self._cond:
                while not self.revoked.is_set() and not (self.stopping.is_set() and not self._runs):
                    self._cond.wait(0.5)
            if self.revoked.is_set():
                self._wind_down()
                return EXIT_REVOKED
            log.info("stopped after %d job(s)", self.completed)
            return EXIT_OK
        finally:
            self._quit.set()
            if not self.revoked.is_set():
                self._goodbye()
            self._release_lock()
            self.api.close()

    def stop(self) -> None:
        """Stop claiming; :meth:`run` returns once the running jobs have ended."""
        self.stopping.set()
        with self._cond:
            self._cond.notify_all()

    def _spawn(self, target: Any, name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self.signals += 1
        name = signal.Signals(signum).name
        runs = self.held()
        if self.signals == 1:
            log.info(
                "%s: taking no more jobs; waiting for %d running job(s) (signal again to cancel them)",
                name,
                len(runs),
            )
            self.stop()
        elif self.signals == 2:
            log.info("%s: cancelling %d running job(s)", name, len(runs))
            for run in runs:
                run.request_cancel("the worker is stopping")
        else:
            log.warning("%s: exiting now; the server takes the running jobs back when their leases end", name)
            for run in runs:
                if run.handle is not None:
                    process.cancel(run.handle)
            os._exit(1)

    def _prepare(self) -> None:
        fd = workdir.lock(self.config.work_dir)
        if fd is None:
            raise StartupError(
                f"another worker is using {self.config.work_dir}; give each worker its own --work-dir",
                EXIT_UNREACHABLE,
            )
        self._lock_fd = fd
        try:
            self.sandboxing = resolve_sandboxing(self.config.sandbox, self.config.job_user)
        except ValueError as exc:
            raise StartupError(str(exc), 2) from None
        if self.sandboxing.refuse:
            raise StartupError(self.sandboxing.problem or "no sandbox", 2)
        if not self.sandboxing.enabled:
            log.warning("jobs run %s", self.sandboxing.describe())
        self.sandboxed = self.sandboxing.enabled
        self.engines = engine_options.probe(self.config.containers or ContainerSettings())
        self.engine_report = engines.EngineReport(self.engines)

    def _take_up_leftovers(self) -> None:
        """What an earlier worker process on this work dir left (:func:`labcloud.worker.resume.take_up`):
        the attempts the server still counts as ours are followed to their end, the rest stopped."""
        engine = self.engines.get()[0] if self.engines is not None else None
        resumed = resume.take_up(
            self.api,
            self.config.token,
            self.jobs_dir,
            self._run_settings(),
            self._ended,
            self.config.kill_grace_s,
            engine,
        )
        with self._cond:
            for run in resumed:
                self._runs[run.key] = run
        for run in resumed:
            run.start()

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def _run_settings(self) -> RunSettings:
        from labcloud.client.config import config_path

        candidates = [self.config.work_dir, config_path(), *self.config.extra_hidden]
        if self.config.token_file is not None:
            candidates.append(self.config.token_file)
        return RunSettings(
            api=self.api,
            jobs_dir=self.jobs_dir,
            sandboxing=self.sandboxing,
            work_dir=self.config.work_dir,
            hidden=tuple(dict.fromkeys(p.expanduser().resolve() for p in candidates)),
            grace_s=self.config.kill_grace_s,
            engines=self.engines,
        )

    # ------------------------------------------------------------------------------------- heartbeats

    def telemetry(self) -> dict[str, Any]:
        data = telemetry.collect(self.config.work_dir, self.sandboxed, self.completed)
        if self.config.status:
            status, error = self.config.status.read()
            if status is not None:
                data["status"] = status
            if error:
                data["status_error"] = error
        return data

    def _heartbeat(self, *, tries: int | None = 1, jobs: list[JobRun] | None = None) -> None:
        runs = [r for r in (self.held() if jobs is None else jobs) if r.reporting]
        body = {
            "capacity": self.config.capacity(),
            "free": self.free(),
            "labels": self.config.labels,
            "telemetry": self.telemetry(),
            "jobs": [{"id": r.id, "attempt": r.attempt} for r in runs],
            "version": __version__,
            **self.engine_report.current(),
        }
        answer = self.api.json(
            "POST", "/heartbeat", token=self.config.token, json=body, tries=tries, what="heartbeat"
        )
        self._apply(answer or {}, runs)

    def _apply(self, answer: dict[str, Any], sent: list[JobRun]) -> None:
        with contextlib.suppress(TypeError, ValueError):
            interval = float(answer.get("heartbeat_interval_s") or DEFAULT_HEARTBEAT_S)
            self.heartbeat_interval_s = max(0.1, interval)
        with contextlib.suppress(TypeError, ValueError):
            self.lease_seconds = float(answer["lease_seconds"])
        self._status_answer(answer.get("status_problems") or [])
        draining = answer.get("state") == "draining"
        if draining != self.draining:
            self.draining = draining
            if draining:
                log.info("draining: finishing %d running job(s), taking no more", len(sent))
            else:
                log.info("active again: taking jobs")
            with self._cond:
                self._cond.notify_all()
        by_id = {r.id: r for r in sent}  # only the attempts this heartbeat named
        for job_id in answer.get("cancel") or []:
            if (run := by_id.get(str(job_id))) is not None and run.reporting:
                run.request_cancel("cancelled by its owner")
        for job_id in answer.get("abort") or []:
            if (run := by_id.get(str(job_id))) is not None and run.reporting:
                run.request_forget("the server took the job back (its lease ran out)")

    def _status_answer(self, problems: list[dict[str, Any]]) -> None:
        """Say so when the server starts (or stops) finding problems with the status we send."""
        if problems == self.status_problems:
            return
        if problems:
            said = "; ".join(f"{p.get('field')} {p.get('message')}" for p in problems[:5])
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            log.warning("the server finds this worker's status wrong: %s%s", said, more)
        else:
            log.info("the server takes this worker's status as valid again")
        self.status_problems = list(problems)

    def _first_heartbeat(self) -> None:
        try:
            self._heartbeat(tries=self.config.connect_tries, jobs=[])
        except TokenRejected as exc:
            raise StartupError(f"{REVOKED_MESSAGE} ({exc.detail})", EXIT_REVOKED) from None
        except Unreachable as exc:
            raise StartupError(
                f"cannot reach the labcloud server at {self.api.server}: {exc.detail}", EXIT_UNREACHABLE
            ) from None
        except WorkerApiError as exc:
            hint = " (is this a labcloud server with the worker API?)" if exc.status == 404 else ""
            raise StartupError(
                f"the server at {self.api.server} refused the heartbeat: {exc.status} {exc.detail}{hint}",
                EXIT_UNREACHABLE,
            ) from None
        capacity = self.config.capacity()
        log.info(
            "connected to %s: %g CPUs, %d MB, %d GPUs%s; labels %s; sandbox %s; containers %s; work dir %s",
            self.api.server,
            capacity["cpus"],
            capacity["memory_mb"],
            capacity["gpus"],
            " (draining)" if self.draining else "",
            ", ".join(f"{k}={v}" for k, v in sorted(self.config.labels.items())) or "none",
            "on" if self.sandboxed else "OFF",
            engines.summary(self.engine_report.current()),
            self.config.work_dir,
        )

    def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        delay = self.heartbeat_interval_s
        while not self._quit.wait(delay):
            began = time.monotonic()
            try:
                self._heartbeat()
            except TokenRejected:
                self._on_revoked()
                return
            except WorkerApiError as exc:
                delay = min(backoff.next(), self.heartbeat_interval_s)
                log.warning("heartbeat failed: %s; the jobs keep running", exc.detail)
                continue
            except Exception:
                log.exception("heartbeat failed")
                delay = min(backoff.next(), self.heartbeat_interval_s)
                continue
            backoff.reset()
            took = time.monotonic() - began
            if self.lease_seconds and took > self.lease_seconds / 3:
                log.warning("a heartbeat took %.1f s, with leases of %g s", took, self.lease_seconds)
            delay = max(0.0, self.heartbeat_interval_s - took)  # a steady rhythm, however long each takes

    def _goodbye(self) -> None:
        """A last heartbeat naming the jobs still held (none after a clean stop)."""
        with contextlib.suppress(Exception):
            self._heartbeat(tries=1)

    # ------------------------------------------------------------------------------------- claims

    def _claim_loop(self) -> None:
        settings = self._run_settings()
        backoff = Backoff()
        while not self.stopping.is_set() and not self.revoked.is_set():
            with self._cond:
                free = self.free()
                if self.draining or not self._has_room(free):
                    self._cond.wait(1.0)
                    continue
                busy = bool(self._runs)
            wait_s = min(self.config.claim_wait_s, BUSY_CLAIM_WAIT_S) if busy else self.config.claim_wait_s
            try:
                response = self.api.call(
                    "POST",
                    "/claim",
                    token=self.config.token,
                    json={
                        "free": free,
                        "labels": self.config.labels,
                        "wait_s": wait_s,
                        "start": True,
                        "max_jobs": CLAIM_MOST,
                    },
                    until=self.stopping,
                    accept=(204,),
                    timeout=httpx.Timeout(30.0 + wait_s, connect=10.0, pool=None),
                    what="claim",
                )
            except TokenRejected:
                self._on_revoked()
                return
            except Abandoned:
                return
            except WorkerApiError as exc:
                delay = backoff.next()
                log.error("claim refused: %s %s; trying again in %.1f s", exc.status, exc.detail, delay)
                self.stopping.wait(delay)
                continue
            backoff.reset()
            if response.status_code == 204 or not response.content:
                continue
            answer = response.json()
            # (a server that predates claims of several jobs answers one, without "more")
            assignments = [a for a in [answer.get("job"), *(answer.get("more") or [])] if a]
            if len(assignments) > 1:
                log.info("took %d jobs in one claim", len(assignments))
            for assignment in assignments:
                self._start(settings, assignment)

    def _start(self, settings: RunSettings, assignment: dict[str, Any]) -> None:
        run = JobRun(settings, assignment, self._ended)
        with self._cond:
            for key, older in list(self._runs.items()):
                if key[0] == run.id:  # we were given the job again: the older attempt is fenced
                    older.request_forget("the server gave this job out again")
            self._runs[run.key] = run
        free = self.free()
        if min(free.values()) < 0:
            log.warning("%s does not fit: %s needed, %s was free", run, run.resources, free)
        run.start()

    def _ended(self, run: JobRun) -> None:
        with self._cond:
            if self._runs.get(run.key) is run:
                del self._runs[run.key]
            if run.final_state:
                self.completed += 1
            self._cond.notify_all()

    # ------------------------------------------------------------------------------------- revocation

    def _on_revoked(self) -> None:
        if self.revoked.is_set():
            return
        log.error("%s", REVOKED_MESSAGE)
        self.revoked.set()
        self.stopping.set()
        for run in self.held():
            run.request_forget("the worker was revoked")
        with self._cond:
            self._cond.notify_all()

    def _wind_down(self) -> None:
        deadline = time.monotonic() + self.config.kill_grace_s + 15
        for run in self.held():
            run.join(max(0.0, deadline - time.monotonic()))
