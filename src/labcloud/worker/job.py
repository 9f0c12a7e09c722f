"""One claimed job on a worker: the transport around the one runner (:mod:`labcloud.execution.runner`).

A :class:`JobRun` lives in its own thread and runs its job through the runner with an
:class:`~labcloud.worker.http_reporter.HttpReporter`, which reports over the worker API with the job token
of this attempt only: the log (shipped as it grows), progress, the outputs (uploaded one by one) and the
end. Two flags steer it from outside: ``cancel`` (a user
cancelled: stop the process, finish with ``cancelled``) and ``forget`` (the job is no longer ours: fenced,
aborted, or the worker was revoked: kill the process, report nothing more). When anything unexpected
happens the run forgets the job rather than guess: the server takes it back when its lease runs out (and
retries it while attempts remain).
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from labcloud import registry
from labcloud.execution import process, runner
from labcloud.execution.attempt import AttemptDir, Writer
from labcloud.execution.engine_probe import EngineProbe
from labcloud.execution.process import Handle
from labcloud.execution.runner import InputSource, JobPlan
from labcloud.execution.sandbox import Sandboxing, SandboxPolicy
from labcloud.execution.task import TaskInput, TaskLayout
from labcloud.registry.spec_parts import Resources
from labcloud.worker.api import Abandoned, Fenced, WorkerApi, WorkerApiError
from labcloud.worker.http_reporter import HttpReporter, post_log
from labcloud.worker.logship import LOG_INTERVAL_S, PROGRESS_INTERVAL_S, LogShipper, ProgressSender

log = logging.getLogger(__name__)


LOG_FILE = "job.log"


@dataclass(frozen=True)
class RunSettings:
    """What every job of one worker shares."""

    api: WorkerApi
    jobs_dir: Path
    sandboxing: Sandboxing
    hidden: tuple[Path, ...] = ()  # besides the host's private folders: the worker's folder, its token...
    work_dir: Path | None = None  # the worker's own folder (holding jobs_dir), if it made it
    grace_s: float = 5.0
    engines: EngineProbe | None = None  # this machine's container engine (None: no container apps here)
    log_interval_s: float = LOG_INTERVAL_S
    progress_interval_s: float = PROGRESS_INTERVAL_S


class JobRun:
    def __init__(
        self, settings: RunSettings, assignment: dict[str, Any], on_done: Callable[[JobRun], None]
    ) -> None:
        self.settings = settings
        self.api = settings.api
        self.assignment = assignment
        self.id = str(assignment["id"])
        self.attempt = int(assignment["attempt"])
        self.token = str(assignment["token"])
        self.job_resources = Resources.model_validate(assignment.get("resources") or {})
        self.resources = self.job_resources.needs()  # what it takes from the worker's capacity
        self.job_dir = settings.jobs_dir / f"{self.id}-{self.attempt}"
        self.cancel = threading.Event()  # a user cancelled the job
        self.forget = threading.Event()  # the job is not ours any more
        self.interrupt = threading.Event()  # either of the two: stop staging
        self.forget_reason = ""
        self.handle: Handle | None = None
        self.final_state: str | None = None
        self.started = time.monotonic()
        self._on_done = on_done
        self._thread = threading.Thread(target=self._guarded, name=f"job-{self.id[:8]}", daemon=True)

    @property
    def reporting(self) -> bool:
        """Still ours and not finished: named in heartbeats, steered by their answers."""
        return self.final_state is None and not self.forget.is_set()

    @property
    def key(self) -> tuple[str, int]:
        return self.id, self.attempt

    def __repr__(self) -> str:
        return f"job {self.id} (attempt {self.attempt})"

    # ------------------------------------------------------------------------------------- steering

    def start(self) -> None:
        self._thread.start()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def request_cancel(self, why: str = "cancelled") -> None:
        """Stop the job and finish it as ``cancelled`` (the runner's watcher sends the signal)."""
        if not self.cancel.is_set():
            log.info("%s: %s; stopping it", self, why)
        self.cancel.set()
        self.interrupt.set()

    def request_forget(self, why: str) -> None:
        """Kill the job's process and report nothing more about it."""
        if not self.forget.is_set():
            self.forget_reason = why
            log.warning("%s: %s; stopping it and reporting nothing more", self, why)
        self.forget.set()
        self.interrupt.set()
        handle = self.handle
        if handle is not None:
            process.cancel(handle)

    # ------------------------------------------------------------------------------------- the run

    def _guarded(self) -> None:
        try:
            self._run()
        except Fenced as exc:
            self.request_forget(f"the server says it is no longer ours ({exc.detail})")
        except Abandoned:
            pass  # forgotten while a call was being retried
        except Exception as exc:
            log.exception("%s: the worker failed running it", self)
            self.request_forget(f"internal error ({type(exc).__name__}: {exc}); the server will retry it")
        finally:
            try:
                self._stop_process()
                shutil.rmtree(self.job_dir, ignore_errors=True)
            finally:
                self._on_done(self)

    def _stop_process(self) -> None:
        """Make sure nothing of this job runs on after the run ends (forgotten jobs are killed)."""
        handle = self.handle
        if handle is None or not process.is_alive(handle):
            return
        process.cancel(handle)
        deadline = time.monotonic() + self.settings.grace_s + 5.0
        while process.is_alive(handle) and time.monotonic() < deadline:
            time.sleep(0.05)

    def _run(self) -> None:
        log.info("%s: %s:%s:%s", self, *(self.assignment.get(k) for k in ("app", "version", "entrypoint")))
        shutil.rmtree(self.job_dir, ignore_errors=True)  # a leftover of an earlier worker process
        self.job_dir.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        shipper = LogShipper(
            self.job_dir.with_name(f"{self.job_dir.name}.log"),
            self._send_log,
            interval_s=self.settings.log_interval_s,
            name=f"log-{self.id[:8]}",
        ).start()
        progress = ProgressSender(
            self._send_progress, interval_s=self.settings.progress_interval_s, name=f"progress-{self.id[:8]}"
        ).start()
        reporter = HttpReporter(self, shipper, progress)
        try:
            try:
                plan = reporter.plan = self._plan(shipper.path)
            except Exception as exc:
                runner.unplanned(reporter, f"this worker cannot run the job: {_detail(exc)}")
            else:
                runner.run(plan, reporter)
        finally:
            shipper.stop()
            progress.stop()
            shipper.path.unlink(missing_ok=True)

    def _plan(self, log_path: Path) -> JobPlan:
        a = self.assignment
        spec = registry.stored_entrypoint(a["spec"])
        inputs: dict[str, InputSource] = {}
        for slot, source in (a.get("inputs") or {}).items():
            files: list[tuple[str, Writer]] = [
                (str(item["path"]), partial(self._fetch, item)) for item in source.get("files") or []
            ]
            inputs[str(slot)] = InputSource(str(source["name"]), files)
        sandboxing = self.settings.sandboxing
        plan = JobPlan(
            job_id=self.id,
            attempt=self.attempt,
            spec=spec,
            params=dict(a.get("params") or {}),
            inputs=inputs,
            env={str(k): str(v) for k, v in (a.get("env") or {}).items()},
            resources=self.job_resources,
            folder=AttemptDir(
                self.job_dir,
                sandboxing.user,
                reach_from=None if sandboxing.enabled else self.settings.work_dir or self.settings.jobs_dir,
            ),
            log_path=log_path,
            sandbox=SandboxPolicy(
                writable=(), hidden=self.settings.hidden, network=spec.network, user=sandboxing.user
            )
            if sandboxing.enabled
            else None,
            grace_s=self.settings.grace_s,
            image=str(a["image"]) if a.get("image") else None,  # a rerun's: the image its first run ran
            refused=sandboxing.refusal,
        )
        if a.get("task"):  # a GA4GH TES task: its executors, files and outputs
            plan.task = TaskLayout.from_wire(
                a["task"], [self._task_input(item) for item in a["task"]["inputs"]]
            )
        if plan.in_container:
            engines = self.settings.engines
            if engines is None:
                plan.engine_problem = "this worker runs no container apps"
            else:
                plan.engine, plan.engine_problem = engines.get()
        return plan

    def _task_input(self, item: dict[str, Any]) -> TaskInput:
        files: list[tuple[str, Writer]] = [
            (str(f["path"]), partial(self._fetch, f)) for f in item.get("files") or []
        ]
        return TaskInput(
            str(item["path"]), bool(item.get("directory")), InputSource(str(item["name"]), files)
        )

    def _fetch(self, item: dict[str, Any], target: BinaryIO) -> None:
        if self.interrupt.is_set():
            raise RuntimeError("cancelled")
        size = item.get("size")
        self.api.download(
            str(item["url"]),
            target,
            token=self.token,
            size=None if size is None else int(size),
            sha256=item.get("sha256") or None,
            until=self.interrupt,
        )

    # ------------------------------------------------------------------------------------- calls

    def call(self, what: str) -> dict[str, Any]:
        return {"token": self.token, "job_call": True, "until": self.forget, "what": f"{what} of {self}"}

    def _send_log(self, offset: int, data: bytes) -> int:
        return post_log(self.api, self.id, self.call("log"), offset, data)

    def _send_progress(self, fraction: float) -> None:
        try:
            answer = self.api.json(
                "POST", f"/jobs/{self.id}/progress", **self.call("progress"), json={"fraction": fraction}
            )
        except Fenced as exc:
            self.request_forget(f"the server says it is no longer ours ({exc.detail})")
            return
        except WorkerApiError as exc:
            log.warning("%s: progress not taken: %s", self, exc.detail)
            return
        if isinstance(answer, dict) and answer.get("cancel"):
            self.request_cancel("cancelled by its owner")


def _detail(exc: BaseException) -> str:
    return getattr(exc, "detail", None) or str(exc) or type(exc).__name__
