"""One claimed job on a worker: stage its inputs, run it through the one runner, report, upload, finish.

A :class:`JobRun` lives in its own thread. It reports with the job token of its attempt only. Two flags
steer it from outside: ``cancel`` (a user cancelled: stop the process, finish with ``cancelled``) and
``forget`` (the job is no longer ours: fenced, aborted, or the worker was revoked: kill the process,
report nothing more). When anything unexpected happens the run forgets the job rather than guess: the
server takes it back when its lease runs out (and retries it while attempts remain).
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from labcloud import registry
from labcloud.execution import process, runner
from labcloud.execution.process import Handle, ProcessResult
from labcloud.execution.runner import InputSource, JobPlan, StagingError
from labcloud.execution.sandbox import SandboxPolicy
from labcloud.worker.api import Abandoned, Fenced, WorkerApi, WorkerApiError, file_chunks, quote_path
from labcloud.worker.logship import LOG_INTERVAL_S, PROGRESS_INTERVAL_S, LogShipper, ProgressSender

log = logging.getLogger(__name__)

HANDLE_FILE = "handle.json"  # beside the job's log: lets a restarted worker stop what it left running
OUTPUT_TRIES = 3  # uploads that arrive different from the file on disk, before the file is skipped
UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0, write=None, read=600.0, pool=None)


@dataclass(frozen=True)
class RunSettings:
    """What every job of one worker shares."""

    api: WorkerApi
    jobs_dir: Path
    sandbox_hidden: tuple[Path, ...] | None  # None: no sandbox
    grace_s: float = 5.0
    log_interval_s: float = LOG_INTERVAL_S
    progress_interval_s: float = PROGRESS_INTERVAL_S


def needs(resources: dict[str, Any]) -> dict[str, float]:
    """What a job takes from the worker's capacity while it runs."""
    return {
        "cpus": float(resources.get("cpus") or 1.0),
        "memory_mb": float(resources.get("memory_mb") or 0.0),
        "gpus": float(resources.get("gpus") or 0.0),
    }


class _Reporter:
    """The runner's :class:`~labcloud.execution.runner.Reporter` for a remote job."""

    def __init__(self, run: JobRun, progress: ProgressSender) -> None:
        self.run = run
        self.sender = progress

    def progress(self, fraction: float) -> None:
        self.sender.report(fraction)

    def cancel_requested(self) -> bool:
        return self.run.cancel.is_set() or self.run.forget.is_set()


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
        self.resources = needs(dict(assignment.get("resources") or {}))
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
        self.job_dir.mkdir(parents=True)
        try:
            plan = self._plan()
        except Exception as exc:
            self._finish("staging_failed", None, f"this worker cannot run the job: {_detail(exc)}")
            return
        shipper = LogShipper(
            plan.log_path, self._send_log, interval_s=self.settings.log_interval_s, name=f"log-{self.id[:8]}"
        ).start()
        progress = ProgressSender(
            self._send_progress, interval_s=self.settings.progress_interval_s, name=f"progress-{self.id[:8]}"
        ).start()
        try:
            self._stage_launch_follow(plan, shipper, progress)
        finally:
            shipper.stop()
            progress.stop()

    def _stage_launch_follow(self, plan: JobPlan, shipper: LogShipper, progress: ProgressSender) -> None:
        try:
            staged = runner.stage(plan)
        except StagingError as exc:
            cause = exc.__cause__
            if isinstance(cause, Fenced):
                raise cause from None
            if self.forget.is_set():
                return
            if self.cancel.is_set():
                self._end_before_start(plan, shipper, "cancelled while its inputs were staged")
                return
            runner.append_log(plan, str(exc))
            shipper.close()
            self._finish("staging_failed", None, str(exc))
            return
        if self.forget.is_set():
            return
        if self.cancel.is_set():
            self._end_before_start(plan, shipper, "cancelled before it started")
            return
        answer = self.api.json("POST", f"/jobs/{self.id}/start", **self._call("start"), json={})
        state = (answer or {}).get("state")
        if state == "cancelling":
            self._end_before_start(plan, shipper, "cancelled before it started")
            return
        if state != "running":
            raise RuntimeError(f"the server answered the start with state {state!r}")
        try:
            self.handle = runner.launch(plan, staged)
        except Exception as exc:
            message = f"the job could not be started: {_detail(exc)}"
            runner.append_log(plan, message)
            shipper.close()
            self._finish("start_failed", None, message)
            return
        (self.job_dir / HANDLE_FILE).write_text(self.handle.to_json())
        if self.forget.is_set():  # taken away while it was starting
            process.cancel(self.handle)
        result = runner.follow(plan, self.handle, _Reporter(self, progress))
        progress.stop()
        if self.forget.is_set():
            return
        if result.outcome == "lost":  # the supervisor vanished: the server retries while attempts remain
            runner.append_log(plan, result.message)
            shipper.close()
            self._finish("lost", None, result.message)
            return
        unkept = self._upload_outputs(plan) if result.outcome != "start_failed" else []
        shipper.close()
        problem = (
            f"{len(unkept)} output file(s) could not be stored: {', '.join(unkept[:5])}" if unkept else None
        )
        self._finish(result.outcome, result.exit_code, result.message, _usage(result), problem)

    def _end_before_start(self, plan: JobPlan, shipper: LogShipper, message: str) -> None:
        runner.append_log(plan, message)
        shipper.close()
        self._finish("cancelled", None, message)

    # ------------------------------------------------------------------------------------- the plan

    def _plan(self) -> JobPlan:
        a = self.assignment
        spec = registry.EntrypointSpec.model_validate(a["spec"])
        inputs: dict[str, InputSource] = {}
        for slot, source in (a.get("inputs") or {}).items():
            files: list[tuple[str, Callable[[Path], None]]] = []
            for item in source.get("files") or []:
                rel = _relative(str(item["path"]), f"input {slot!r}")
                files.append((rel, partial(self._fetch, item)))
            inputs[str(slot)] = InputSource(_relative(str(source["name"]), f"input {slot!r}"), files)
        hidden = self.settings.sandbox_hidden
        work_dir = self.job_dir / "work"
        return JobPlan(
            job_id=self.id,
            spec=spec,
            params=dict(a.get("params") or {}),
            inputs=inputs,
            env={str(k): str(v) for k, v in (a.get("env") or {}).items()},
            resources=dict(a.get("resources") or {}),
            job_dir=self.job_dir,
            sandbox=None
            if hidden is None
            else SandboxPolicy(writable=(work_dir,), hidden=hidden, network=spec.network),
            grace_s=self.settings.grace_s,
        )

    def _fetch(self, item: dict[str, Any], target: Path) -> None:
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

    # ------------------------------------------------------------------------------------- reports

    def _call(self, what: str) -> dict[str, Any]:
        return {"token": self.token, "job_call": True, "until": self.forget, "what": f"{what} of {self}"}

    def _send_log(self, offset: int, data: bytes) -> int:
        response = self.api.call(
            "POST",
            f"/jobs/{self.id}/log",
            **self._call("log"),
            accept=(409,),
            body=data,
            headers={"Log-Offset": str(offset), "Content-Type": "application/octet-stream"},
        )
        try:
            size = int(response.json()["size"])
        except (ValueError, KeyError, TypeError):
            raise WorkerApiError(
                response.status_code, f"unexpected answer to a log chunk: {response.text[:200]}"
            ) from None
        if response.status_code == 409:
            log.info(
                "%s: the server has %d bytes of the log, not %d; resending from there", self, size, offset
            )
        return size

    def _send_progress(self, fraction: float) -> None:
        try:
            answer = self.api.json(
                "POST", f"/jobs/{self.id}/progress", **self._call("progress"), json={"fraction": fraction}
            )
        except Fenced as exc:
            self.request_forget(f"the server says it is no longer ours ({exc.detail})")
            return
        except WorkerApiError as exc:
            log.warning("%s: progress not taken: %s", self, exc.detail)
            return
        if isinstance(answer, dict) and answer.get("cancel"):
            self.request_cancel("cancelled by its owner")

    def _upload_outputs(self, plan: JobPlan) -> list[str]:
        """Send every output file; the ones that could not be stored (named in the log too)."""
        unkept: list[str] = []
        if not plan.output_dir.is_dir():
            return unkept
        for path in sorted(plan.output_dir.rglob("*")):
            if self.forget.is_set():
                raise Abandoned("outputs")
            if path.is_symlink() or not path.is_file():
                continue
            rel = path.relative_to(plan.output_dir).as_posix()
            try:
                self._put_output(rel, path)
            except (Fenced, Abandoned):
                raise
            except WorkerApiError as exc:
                runner.append_log(plan, f"output {rel} was not stored: {exc.detail}")
                unkept.append(rel)
        return unkept

    def _put_output(self, rel: str, path: Path) -> None:
        for _ in range(OUTPUT_TRIES):
            digests: list[Any] = []

            def body(path: Path = path, digests: list[Any] = digests) -> Any:
                digests.append(hashlib.sha256())
                return file_chunks(path, digests[-1])

            answer = self.api.json(
                "PUT",
                f"/jobs/{self.id}/outputs/{quote_path(rel)}",
                **self._call(f"output {rel}"),
                body=body,
                headers={
                    "Content-Length": str(path.stat().st_size),
                    "Content-Type": "application/octet-stream",
                },
                timeout=UPLOAD_TIMEOUT,
            )
            sent = digests[-1].hexdigest() if digests else ""
            if not isinstance(answer, dict) or answer.get("sha256") in (None, sent):
                return
            log.warning(
                "%s: output %s arrived damaged (SHA-256 %s); sending it again", self, rel, answer["sha256"]
            )
        raise WorkerApiError(0, f"it arrived damaged {OUTPUT_TRIES} times")

    def _finish(
        self,
        outcome: str,
        exit_code: int | None,
        message: str,
        usage: dict[str, float] | None = None,
        problem: str | None = None,
    ) -> None:
        body: dict[str, Any] = {
            "outcome": outcome,
            "exit_code": exit_code,
            "message": message[:4000],
            "usage": usage or {},
        }
        if problem:
            body["problem"] = problem[:4000]
        answer = self.api.json("POST", f"/jobs/{self.id}/finish", **self._call("finish"), json=body)
        self.final_state = str((answer or {}).get("state", ""))
        log.info(
            "%s: %s (%s%s)", self, self.final_state, outcome, "" if exit_code is None else f" {exit_code}"
        )


def _usage(result: ProcessResult) -> dict[str, float]:
    return {
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
    }


def _relative(path: str, what: str) -> str:
    """A path the server gave, which must stay inside its folder."""
    pure = PurePosixPath(path)
    if not path or pure.is_absolute() or ".." in pure.parts or "\x00" in path:
        raise ValueError(f"{what}: refusing the path {path!r}")
    return pure.as_posix()


def _detail(exc: BaseException) -> str:
    return getattr(exc, "detail", None) or str(exc) or type(exc).__name__


def read_handle(job_dir: Path) -> Handle | None:
    try:
        return Handle.from_json((job_dir / HANDLE_FILE).read_text())
    except (OSError, ValueError, KeyError):
        return None
