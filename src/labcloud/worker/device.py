"""Instruments as workers: :class:`Device` makes a long-running program (the software of a recording rig,
a hardware system) a labcloud pull worker that takes jobs and does them itself, instead of running a
command for each the way ``labcloud worker`` does.

```python
with Device(server_url, worker_token) as dev:          # or Device.from_env()
    dev.status = {"camera": "ready", "temperature_c": 24.5}
    job = dev.take(timeout=30)                          # a job, or None
    if job:
        job.log("recording")
        job.progress(0.5)
        job.upload("clip.mp4", as_="video.mp4")
        job.succeed()
```

A thread heartbeats while the device is open (every ``heartbeat_interval_s`` the server asks for): it
renews the lease of every job held, carries :attr:`Device.status` as ``telemetry["status"]`` beside what
:mod:`labcloud.worker.telemetry` reads of the machine, and brings back cancels (:attr:`DeviceJob.cancelled`)
and aborts. A job the server took back (its lease ran out, the token was revoked, a call answered
``fenced``) is :attr:`DeviceJob.gone`: nothing more about it is reported, and its reporting calls do nothing
and return None. Everything goes through the worker protocol's client (:mod:`labcloud.worker.api`), the
log and progress senders (:mod:`labcloud.worker.logship`) and the calls the job runner's reporter makes
(:mod:`labcloud.worker.http_reporter`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from labcloud import __version__
from labcloud.execution.run_end import Outcome, RunEnd
from labcloud.registry.spec_parts import Resources
from labcloud.worker import telemetry
from labcloud.worker.api import (
    Abandoned,
    Backoff,
    Fenced,
    TokenRejected,
    Unreachable,
    WorkerApi,
    WorkerApiError,
)
from labcloud.worker.http_reporter import finish_body, post_log, put_output
from labcloud.worker.logship import LogShipper, ProgressSender

log = logging.getLogger(__name__)

SERVER_ENV = ("LABCLOUD_WORKER_SERVER", "LABCLOUD_SERVER")
TOKEN_ENV = "LABCLOUD_WORKER_TOKEN"
TOKEN_FILE_ENV = "LABCLOUD_WORKER_TOKEN_FILE"
DEFAULT_HEARTBEAT_S = 5.0
MAX_CLAIM_WAIT_S = 30.0  # the longest the server lets one claim wait
OUTPUTS = "outputs"
_JOB_FOLDER = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}-[0-9]+")


class DeviceError(Exception):
    """The device cannot work with the server: unreachable, refused, or its token revoked."""


# ------------------------------------------------------------------------------------------ the device


class Device:
    """A pull worker inside an instrument's own program (see the module's description).

    ``capacity``: what the device offers jobs (``cpus``, ``memory_mb``, ``gpus``; by default this machine's
    CPUs and 80% of its memory); a job is given only when its resources fit in what the jobs held leave.
    ``labels``: reported to admins (which jobs it may take is decided by the labels it was registered
    with). ``work_dir``: where each job's log and :meth:`DeviceJob.output` files are kept until sent (a
    temporary folder, removed on :meth:`close`, when not given).
    """

    def __init__(
        self,
        server: str,
        token: str,
        *,
        capacity: Mapping[str, float] | None = None,
        labels: Mapping[str, str] | None = None,
        work_dir: Path | str | None = None,
        connect_tries: int = 7,
        api: WorkerApi | None = None,
    ) -> None:
        if not token.strip():
            raise DeviceError(
                f"no worker token: an admin makes one with labcloud workers add NAME (${TOKEN_ENV})"
            )
        self.api = api or WorkerApi(server)
        self.token = token.strip()
        self.capacity = _capacity(capacity)
        self.labels = {str(k): str(v) for k, v in (labels or {}).items()}
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="labcloud-device-")).expanduser().resolve()
        self.connect_tries = connect_tries
        self.heartbeat_interval_s = DEFAULT_HEARTBEAT_S
        self.lease_seconds: float | None = None
        self.draining = False
        self.completed = 0
        self._status: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._jobs: dict[tuple[str, int], DeviceJob] = {}
        self._quit = threading.Event()
        self._wake = threading.Event()
        self._revoked = threading.Event()
        self._thread: threading.Thread | None = None
        self._connected = False

    @classmethod
    def from_env(cls, **kwargs: Any) -> Device:
        """A device for the server in ``$LABCLOUD_WORKER_SERVER`` (or ``$LABCLOUD_SERVER``) with the token in
        ``$LABCLOUD_WORKER_TOKEN`` (or the file ``$LABCLOUD_WORKER_TOKEN_FILE`` names)."""
        server = next((os.environ[name] for name in SERVER_ENV if os.environ.get(name)), "")
        if not server:
            raise DeviceError(f"no server: set {SERVER_ENV[0]} to the labcloud server's URL")
        token = os.environ.get(TOKEN_ENV, "")
        if not token and os.environ.get(TOKEN_FILE_ENV):
            path = Path(os.environ[TOKEN_FILE_ENV]).expanduser()
            try:
                token = (path.read_text(encoding="utf-8").strip().splitlines() or [""])[0]
            except OSError as exc:
                raise DeviceError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
        return cls(server, token, **kwargs)

    def __repr__(self) -> str:
        return f"Device({self.api.server!r})"

    # ------------------------------------------------------------------------------------- status

    @property
    def status(self) -> dict[str, Any]:
        """What the instrument says of itself (JSON), sent with every heartbeat as ``telemetry.status``."""
        with self._lock:
            return json.loads(json.dumps(self._status))

    @status.setter
    def status(self, value: Mapping[str, Any]) -> None:
        try:  # a copy, checked now rather than in the heartbeat thread
            copied = json.loads(json.dumps(dict(value), allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(
                f"the status must be JSON (an object of strings, numbers, lists...): {exc}"
            ) from None
        with self._lock:
            self._status = copied

    def beat(self) -> None:
        """Send a heartbeat now rather than at the next interval (say, the status just changed)."""
        self._wake.set()

    @property
    def revoked(self) -> bool:
        """The server refused the worker token (revoked or wrong): nothing more can be done."""
        return self._revoked.is_set()

    @property
    def jobs(self) -> list[DeviceJob]:
        """The jobs held now (taken, not ended, not taken back)."""
        with self._lock:
            return list(self._jobs.values())

    # ------------------------------------------------------------------------------------- life

    def connect(self) -> Device:
        """The first heartbeat (:class:`DeviceError` when it fails), then heartbeats from a thread."""
        if self._thread is not None:
            return self
        try:
            self._heartbeat(tries=self.connect_tries)
        except TokenRejected as exc:
            self._revoked.set()
            self._release()
            raise DeviceError(
                f"the server refused the worker token (revoked or wrong): {exc.detail}"
            ) from None
        except WorkerApiError as exc:
            self._release()
            raise DeviceError(
                f"cannot reach the labcloud server at {self.api.server}: {exc.detail}"
            ) from None
        self._connected = True
        self.work_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        _remove_leftovers(self.work_dir)
        self._thread = threading.Thread(target=self._heartbeat_loop, name="device-heartbeat", daemon=True)
        self._thread.start()
        log.info("device connected to %s (heartbeat every %g s)", self.api.server, self.heartbeat_interval_s)
        return self

    def close(self) -> None:
        """Stop: jobs still held are reported ``lost`` (the server runs them again while attempts remain),
        a last heartbeat says so, and the heartbeats end."""
        for job in self.jobs:
            job._give_back()
        self._quit.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(self.api.timeout + 5)
            self._thread = None
        if self._connected and not self.revoked:  # a last word: no jobs held any more
            with contextlib.suppress(Exception):
                self._heartbeat(tries=1)
        self._release()

    def _release(self) -> None:
        self.api.close()
        if self._own_dir:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> Device:
        return self.connect()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ------------------------------------------------------------------------------------- jobs

    def free(self) -> dict[str, float]:
        """Capacity left by the jobs held."""
        free = dict(self.capacity)
        for job in self.jobs:
            for key, value in job.needs.items():
                free[key] = free.get(key, 0.0) - value
        return {k: round(max(0.0, v), 6) for k, v in free.items()}

    def take(self, timeout: float = 30.0) -> DeviceJob | None:
        """Claim one job that fits, waiting up to ``timeout`` seconds for one (a new job ends the wait at
        once); None when none came (or the server could not be reached in that time). The job is
        ``staging`` until :meth:`DeviceJob.start` (or its first progress or upload)."""
        if self._thread is None:
            raise DeviceError("connect the device first (Device.connect(), or use it in a with block)")
        deadline = time.monotonic() + max(0.0, timeout)
        backoff = Backoff()
        while True:
            if self.revoked:
                raise DeviceError("the server refused the worker token (revoked or wrong)")
            wait_s = min(MAX_CLAIM_WAIT_S, max(0.0, deadline - time.monotonic()))
            try:
                response = self.api.call(
                    "POST",
                    "/claim",
                    token=self.token,
                    json={"free": self.free(), "labels": self.labels, "wait_s": round(wait_s, 3)},
                    tries=1,
                    accept=(204,),
                    timeout=httpx.Timeout(30.0 + wait_s, connect=10.0, pool=None),
                    what="claim",
                )
            except TokenRejected:
                self._on_revoked()
                continue
            except (Unreachable, WorkerApiError) as exc:
                delay = min(backoff.next(), deadline - time.monotonic())
                if delay <= 0:
                    return None
                log.warning("claim failed (%s); trying again in %.1f s", exc.detail, delay)
                time.sleep(delay)
                continue
            backoff.reset()
            if response.status_code == 200 and response.content:
                assignment = response.json().get("job")
                if assignment:
                    return self._held(assignment)
            if time.monotonic() >= deadline:
                return None

    def _held(self, assignment: dict[str, Any]) -> DeviceJob:
        job = DeviceJob(self, assignment)
        with self._lock:
            for key, older in list(self._jobs.items()):
                if key[0] == job.id:  # given this job again: the older attempt is fenced
                    older._forget("the server gave the job out again")
            self._jobs[job.key] = job
        log.info("%s: %s:%s:%s", job, job.app, job.version, job.entrypoint)
        return job

    def _ended(self, job: DeviceJob) -> None:
        with self._lock:
            if self._jobs.get(job.key) is job:
                del self._jobs[job.key]
                self.completed += job.final_state is not None

    # ------------------------------------------------------------------------------------- heartbeats

    def telemetry(self) -> dict[str, Any]:
        """This machine's telemetry, with the instrument's :attr:`status` as ``status``."""
        data = telemetry.collect(self.work_dir, False, self.completed)
        data.pop("sandbox", None)  # a device runs no commands: no sandbox to speak of
        data["status"] = self.status
        return data

    def _heartbeat(self, *, tries: int | None = 1) -> None:
        held = [job for job in self.jobs if job.reporting]
        body = {
            "capacity": self.capacity,
            "free": self.free(),
            "labels": self.labels,
            "telemetry": self.telemetry(),
            "jobs": [{"id": job.id, "attempt": job.attempt} for job in held],
            "version": __version__,
        }
        answer = self.api.json(
            "POST", "/heartbeat", token=self.token, json=body, tries=tries, what="heartbeat"
        )
        self._apply(answer if isinstance(answer, dict) else {}, held)

    def _apply(self, answer: dict[str, Any], sent: list[DeviceJob]) -> None:
        with contextlib.suppress(TypeError, ValueError):
            self.heartbeat_interval_s = max(
                0.1, float(answer.get("heartbeat_interval_s") or DEFAULT_HEARTBEAT_S)
            )
        with contextlib.suppress(KeyError, TypeError, ValueError):
            self.lease_seconds = float(answer["lease_seconds"])
        self.draining = answer.get("state") == "draining"
        by_id = {job.id: job for job in sent}  # only the attempts this heartbeat named
        for job_id in answer.get("cancel") or []:
            if (job := by_id.get(str(job_id))) is not None:
                job._cancel_requested()
        for job_id in answer.get("abort") or []:
            if (job := by_id.get(str(job_id))) is not None:
                job._forget("the server took the job back (its lease ran out)")

    def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        delay = self.heartbeat_interval_s
        while True:
            self._wake.wait(delay)
            self._wake.clear()
            if self._quit.is_set():
                return
            began = time.monotonic()
            try:
                self._heartbeat()
            except TokenRejected:
                self._on_revoked()
                return
            except Exception as exc:
                delay = min(backoff.next(), self.heartbeat_interval_s)
                log.warning("heartbeat failed (%s); the jobs go on", getattr(exc, "detail", None) or exc)
                continue
            backoff.reset()
            took = time.monotonic() - began
            if self.lease_seconds and took > self.lease_seconds / 3:
                log.warning("a heartbeat took %.1f s, with leases of %g s", took, self.lease_seconds)
            delay = max(0.0, self.heartbeat_interval_s - took)

    def _on_revoked(self) -> None:
        if not self._revoked.is_set():
            log.error("the server refused the worker token (revoked or wrong); the jobs held are given up")
        self._revoked.set()
        for job in self.jobs:
            job._forget("the worker token was revoked")


def _capacity(given: Mapping[str, float] | None) -> dict[str, float]:
    if given is None:
        import psutil

        given = {"cpus": os.cpu_count() or 1, "memory_mb": int(psutil.virtual_memory().total / 2**20 * 0.8)}
    capacity = {"cpus": 0.0, "memory_mb": 0.0, "gpus": 0.0}
    for key, value in given.items():
        if key not in capacity:
            raise ValueError(f"capacity {key!r}: only cpus, memory_mb and gpus")
        capacity[key] = float(value)
    return capacity


# ------------------------------------------------------------------------------------------ a job


@dataclass(frozen=True)
class InputFile:
    """One file of a job's input: its ``path`` below the input (the input's own name for a file)."""

    path: str
    size: int | None
    sha256: str | None
    url: str


@dataclass(frozen=True)
class JobInput:
    """A job's input: a file (one file whose path is the name) or a folder of files."""

    name: str
    files: tuple[InputFile, ...]

    @property
    def is_file(self) -> bool:
        return len(self.files) == 1 and self.files[0].path == self.name


class DeviceJob:
    """One job a :class:`Device` took, as this attempt: read what it asks, report how it goes, end it."""

    def __init__(self, device: Device, assignment: dict[str, Any]) -> None:
        self.device = device
        self.api = device.api
        self.assignment = assignment
        self.id = str(assignment["id"])
        self.attempt = int(assignment["attempt"])
        self.token = str(assignment["token"])
        self.app = str(assignment.get("app") or "")
        self.version = str(assignment.get("version") or "")
        self.entrypoint = str(assignment.get("entrypoint") or "")
        self.params: dict[str, Any] = dict(assignment.get("params") or {})
        self.env: dict[str, str] = {str(k): str(v) for k, v in (assignment.get("env") or {}).items()}
        self.resources: dict[str, Any] = dict(assignment.get("resources") or {})
        self.needs = Resources.model_validate(self.resources).needs()
        self.inputs: dict[str, JobInput] = {
            str(slot): JobInput(
                str(source.get("name") or slot),
                tuple(
                    InputFile(
                        str(f["path"]),
                        None if f.get("size") is None else int(f["size"]),
                        f.get("sha256") or None,
                        str(f["url"]),
                    )
                    for f in source.get("files") or []
                ),
            )
            for slot, source in (assignment.get("inputs") or {}).items()
        }
        self.final_state: str | None = None  # the job's state once ended
        self.started = False
        self.taken_at = time.monotonic()
        self.folder = device.work_dir / f"{self.id}-{self.attempt}"
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gone = threading.Event()  # no longer ours: report nothing more
        self._cancel = threading.Event()
        self._end = threading.Lock()
        self._log_lock = threading.Lock()
        self._log_closed = False
        self._log_path = self.folder / "job.log"
        self._log_path.touch()
        self._shipper = LogShipper(self._log_path, self._send_log, name=f"log-{self.id[:8]}").start()
        self._progress = ProgressSender(self._send_progress, name=f"progress-{self.id[:8]}").start()

    def __repr__(self) -> str:
        return f"job {self.id} (attempt {self.attempt})"

    @property
    def key(self) -> tuple[str, int]:
        return self.id, self.attempt

    # ------------------------------------------------------------------------------------- state

    @property
    def cancelled(self) -> bool:
        """Its owner cancelled it: stop, then end it (:meth:`cancel`; any end is recorded as cancelled)."""
        return self._cancel.is_set()

    def wait_cancelled(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` seconds for a cancel (or for the job to be taken away); whether either
        came. Handy as the pause of a recording loop."""
        if self._cancel.wait(timeout):
            return True
        return self._gone.is_set()

    @property
    def gone(self) -> bool:
        """The server took the job back (lease ran out, token revoked): nothing more is reported."""
        return self._gone.is_set()

    @property
    def reporting(self) -> bool:
        """Held, not ended, not taken back: named in heartbeats."""
        return self.final_state is None and not self._gone.is_set()

    # ------------------------------------------------------------------------------------- reports

    def start(self) -> str | None:
        """Staging is over, the work starts: the job shows ``running`` (done for you by the first
        :meth:`progress` or :meth:`upload`). Its state (``cancelling`` when cancelled meanwhile)."""
        if self.started or not self.reporting:
            return None
        self.started = True
        answer = self._json("POST", f"/jobs/{self.id}/start", "start", json={})
        state = str((answer or {}).get("state") or "")
        if state == "cancelling":
            self._cancel_requested()
        return state or None

    def log(self, text: str) -> None:
        """Add a line (or lines) to the job's log; sent in the background within about a quarter second."""
        if not text.endswith("\n"):
            text += "\n"
        with self._log_lock:
            if self._log_closed or not self.reporting:
                return
            with open(self._log_path, "ab") as fh:
                fh.write(text.encode("utf-8", "replace"))
        self._shipper.poke()

    def progress(self, fraction: float) -> None:
        """How far the job is, 0 to 1 (sent at most twice a second; the latest wins)."""
        if not self.reporting:
            return
        self.start()
        self._progress.report(min(1.0, max(0.0, float(fraction))))

    def download(self, slot: str, into: Path | str | None = None) -> Path:
        """Fetch the input ``slot`` under ``into`` (default: the job's folder), each file checked against
        its size and SHA-256: the file's path for a file input, the folder's for a folder."""
        try:
            source = self.inputs[slot]
        except KeyError:
            raise KeyError(
                f"the job has no input {slot!r} (it has: {', '.join(self.inputs) or 'none'})"
            ) from None
        base = Path(into).expanduser().resolve() if into is not None else self.folder / "inputs"
        root = base if source.is_file else _inside(base, source.name)
        root.mkdir(parents=True, exist_ok=True)
        for item in source.files:
            target = _inside(root, item.path)
            target.parent.mkdir(parents=True, exist_ok=True)
            with open(target, "wb") as fh:
                self.api.download(
                    item.url, fh, token=self.token, size=item.size, sha256=item.sha256, until=self._gone
                )
        return _inside(root, source.files[0].path) if source.is_file else root

    def upload(self, path: Path | str, as_: str | None = None) -> dict[str, Any] | None:
        """Store a file as an output of the job now, named ``as_`` (default: the file's name); a folder is
        sent file by file, below ``as_`` if given. The server's record of the (last) file; None when the
        job was taken away. :class:`~labcloud.worker.api.WorkerApiError` when the server refuses it."""
        source = Path(path)
        if not self.reporting:
            return None
        self.start()
        if source.is_dir():
            stored: dict[str, Any] | None = {}
            for rel, file in _files_below(source):
                stored = self._put(f"{as_.strip('/')}/{rel}" if as_ else rel, file)
            return stored
        return self._put(as_ or source.name, source)

    def output(self, name: str) -> Path:
        """A path to write an output file at (``name`` may have folders); what is there when the job ends
        is sent before the end is reported."""
        target = _inside(self.folder / OUTPUTS, name)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    # ------------------------------------------------------------------------------------- ends

    def succeed(self, message: str = "") -> str | None:
        """It worked: the outputs written with :meth:`output` are sent, then the end. The job's state
        (``succeeded``; ``cancelled`` when it was cancelled); None when the job was taken away."""
        return self._finish(RunEnd("exited", 0, message, self._usage()))

    def fail(self, message: str, exit_code: int = 1) -> str | None:
        """It did not work (``app_error`` with ``exit_code``, which must not be 0); the state."""
        if exit_code == 0:
            raise ValueError("a failed job's exit code is not 0 (use succeed())")
        return self._finish(RunEnd("exited", exit_code, message, self._usage()))

    def cancel(self, message: str = "") -> str | None:
        """End it as cancelled: after :attr:`cancelled`, or when the instrument's own operator stopped it."""
        return self._finish(RunEnd("cancelled", None, message or "stopped on the device", self._usage()))

    def _usage(self) -> dict[str, float]:
        return {"wall_s": round(time.monotonic() - self.taken_at, 3)}

    def _give_back(self) -> None:
        """The device closes with the job unended: it is reported ``lost`` (a few tries), so that the server
        queues it again now rather than when its lease runs out."""
        with self._end:
            if not self.reporting:
                return
            self._clean_up()
            body = finish_body(RunEnd("lost", None, "the device closed without ending it", self._usage()))
            with contextlib.suppress(WorkerApiError, Abandoned):
                self.api.json("POST", f"/jobs/{self.id}/finish", **self.call("finish"), json=body, tries=3)
            self._gone.set()
            self.device._ended(self)

    def _finish(self, end: RunEnd) -> str | None:
        with self._end:
            if not self.reporting:
                self._clean_up()
                return self.final_state
            self._progress.stop()
            try:
                problem = self._send_outputs()
                with self._log_lock:
                    self._log_closed = True  # a line written from now on is not sent
                try:
                    self._shipper.close(timeout=self.api.timeout * 2)
                except (Fenced, Abandoned):
                    raise
                except Exception as exc:
                    log.warning("%s: the end of the log could not be sent (%s)", self, exc)
                body = finish_body(_with_problem(end, problem))
                answer = self._json("POST", f"/jobs/{self.id}/finish", "finish", json=body)
            except (Fenced, Abandoned) as exc:
                self._forget(f"the server says it is no longer ours ({getattr(exc, 'detail', exc)})")
                answer = None
            if answer is None:  # taken away meanwhile
                self._clean_up()
                return None
            self.final_state = str(answer.get("state") or "") or "ended"
            log.info("%s: %s (%s)", self, self.final_state, _outcome(end.outcome, end.exit_code))
            self.device._ended(self)
            self._clean_up()
            return self.final_state

    def _send_outputs(self) -> str | None:
        """Every file written with :meth:`output`; what could not be stored, if anything."""
        unkept = []
        for rel, file in _files_below(self.folder / OUTPUTS):
            try:
                self._put(rel, file)
            except (Fenced, Abandoned):
                raise
            except WorkerApiError as exc:
                log.warning("%s: output %s not stored: %s", self, rel, exc.detail)
                unkept.append(rel)
        if unkept:
            return f"{len(unkept)} output file(s) could not be stored: {', '.join(unkept[:5])}"
        return None

    def _clean_up(self) -> None:
        self._progress.stop()
        self._shipper.stop()
        with self._log_lock:
            self._log_closed = True
            shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------------------------- steering

    def _cancel_requested(self) -> None:
        if not self._cancel.is_set():
            log.info("%s: cancelled by its owner", self)
        self._cancel.set()

    def _forget(self, why: str) -> None:
        if self._gone.is_set() or self.final_state is not None:
            return
        log.warning("%s: %s; reporting nothing more about it", self, why)
        self._gone.set()
        self._cancel.set()  # wakes wait_cancelled
        self._progress.stop()
        self._shipper.stop()
        self.device._ended(self)  # its folder stays until it is ended here: the instrument may be writing

    # ------------------------------------------------------------------------------------- calls

    def call(self, what: str) -> dict[str, Any]:
        """The job token, and the event that abandons retries once the job is taken away."""
        return {"token": self.token, "job_call": True, "until": self._gone, "what": f"{what} of {self}"}

    def _json(self, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any] | None:
        """A job call; None (and the job forgotten) when the server says it is no longer ours."""
        try:
            answer = self.api.json(method, path, **self.call(what), **kwargs)
        except Fenced as exc:
            self._forget(f"the server says it is no longer ours ({exc.detail})")
            return None
        except Abandoned:
            return None
        return answer if isinstance(answer, dict) else {}

    def _put(self, rel: str, path: Path) -> dict[str, Any] | None:
        try:
            return put_output(self.api, self.id, self.call(f"output {rel}"), rel, path)
        except Fenced as exc:
            self._forget(f"the server says it is no longer ours ({exc.detail})")
            return None
        except Abandoned:
            return None

    def _send_log(self, offset: int, data: bytes) -> int:
        try:
            return post_log(self.api, self.id, self.call("log"), offset, data)
        except Fenced as exc:
            self._forget(f"the server says it is no longer ours ({exc.detail})")
            raise

    def _send_progress(self, fraction: float) -> None:
        answer = self._json("POST", f"/jobs/{self.id}/progress", "progress", json={"fraction": fraction})
        if answer and answer.get("cancel"):
            self._cancel_requested()


def _inside(root: Path, rel: str) -> Path:
    """``root/rel``, refused when ``rel`` is absolute or climbs out of ``root``."""
    base = root.resolve()
    target = (base / rel).resolve()
    if base not in target.parents:
        raise ValueError(f"{rel!r} is not a path inside {root}")
    return target


def _remove_leftovers(work_dir: Path) -> None:
    """Job folders an earlier device process left in ``work_dir`` (``<job id>-<attempt>``): those jobs are
    not this process's; the server takes them back when their leases run out."""
    for entry in work_dir.iterdir():
        if _JOB_FOLDER.fullmatch(entry.name) and entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry, ignore_errors=True)


def _files_below(folder: Path) -> Iterator[tuple[str, Path]]:
    """Regular files under ``folder`` by relative path, in order; links are never followed."""
    if not folder.is_dir() or folder.is_symlink():
        return
    for top, dirs, names in os.walk(folder, followlinks=False):
        dirs.sort()
        for name in sorted(names):
            path = Path(top) / name
            if path.is_file() and not path.is_symlink():
                yield path.relative_to(folder).as_posix(), path


def _with_problem(end: RunEnd, problem: str | None) -> RunEnd:
    if problem is None:
        return end
    return RunEnd(end.outcome, end.exit_code, end.message, end.usage, problem=problem)


def _outcome(outcome: Outcome, exit_code: int | None) -> str:
    return outcome if exit_code is None else f"{outcome} {exit_code}"
