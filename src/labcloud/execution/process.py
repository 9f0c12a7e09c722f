"""Launch, find again, cancel and read the result of supervised job processes.

Each job runs under its own small supervisor process (``supervise.py``), started detached so that the job
survives a crash or restart of the server. The supervisor holds a lock on its attempt's folder and writes
its own :class:`Handle` there, so a new server process finds it (:func:`find_supervisor`) and follows it
again (:mod:`labcloud.execution.watch`). The supervisor records the outcome in ``status_path``; the log file
is the only channel for output, so a watcher can resume it at any byte offset.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
import os
import py_compile
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from labcloud.execution import supervise
from labcloud.execution.run_end import Outcome
from labcloud.execution.sandbox import JobUser, SandboxPolicy, wrap_commands

__all__ = [
    "Handle",
    "LaunchError",
    "LaunchSpec",
    "Limits",
    "Outcome",
    "ProcessResult",
    "cancel",
    "find_supervisor",
    "is_alive",
    "launch",
    "read_result",
]


SUPERVISOR_SCRIPT = Path(supervise.__file__).resolve()
READY_TIMEOUT_S = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


class LaunchError(RuntimeError):
    """The supervisor itself could not be started (a system problem, not a problem of the job)."""


@dataclass(frozen=True)
class Limits:
    """Resource limits the supervisor enforces."""

    timeout_s: float | None = None
    memory_mb: int | None = None  # total RSS of the job's process tree (sampled every 100 ms) → SIGKILL
    grace_s: float = 5.0  # between SIGTERM and SIGKILL on timeout and cancel


@dataclass(frozen=True)
class LaunchSpec:
    """Everything needed to start a job and to find its output and result again."""

    argv: list[str]
    cwd: Path  # the job folder
    env: dict[str, str]  # the job's complete environment; nothing is inherited from the server
    log_path: Path  # stdout and stderr of the job, appended
    status_path: Path  # the supervisor's final JSON result (written atomically)
    limits: Limits
    sandbox: SandboxPolicy | None  # None: run without bwrap
    # A container job (argv runs the engine's client): how to stop, inspect and remove its container, and
    # the environment of those commands.
    container: dict[str, list[str]] | None = None
    engine_env: dict[str, str] | None = None
    program: str = ""  # the program the job runs, for messages (argv[0] when empty)
    log_times: bool = False  # note beside the log when its bytes came (the server's own log: job_logs)
    image: str = ""  # a container job's image, for messages
    # A task: containers run one after the other (argv runs none), each a dict with its client's "argv",
    # its "container" command lines, "program", "shown" (its command line for the log), "ignore_error",
    # and "stdin"/"stdout"/"stderr" paths below "root" (opened by the supervisor, created for "owner").
    steps: list[dict[str, Any]] | None = None
    # Without a sandbox: the host user the command runs as (labcloud runs as root). The supervisor drops to
    # it, with no supplementary groups and no way to gain privileges, before the command starts.
    user: JobUser | None = None


@dataclass(frozen=True)
class Handle:
    """What the server stores to find the supervisor again, also after a restart.

    ``create_time`` is the supervisor's start in seconds since boot (exact to the clock tick and unaffected
    by wall-clock changes) and ``boot_id`` the kernel's id of the current boot: together with ``pid`` they
    tell the supervisor from an unrelated process that got the same pid later.
    """

    pid: int
    create_time: float
    boot_id: str = ""

    def to_json(self) -> str:
        return json.dumps({"pid": self.pid, "create_time": self.create_time, "boot_id": self.boot_id})

    @classmethod
    def from_json(cls, s: str) -> Handle:
        d = json.loads(s)
        return cls(pid=int(d["pid"]), create_time=float(d["create_time"]), boot_id=str(d.get("boot_id", "")))


@dataclass(frozen=True)
class ProcessResult:
    """How a job ended, as recorded by its supervisor."""

    outcome: Outcome
    exit_code: int | None  # only for "exited"; negative = killed by that signal (unsandboxed; bwrap: 128+N)
    wall_s: float
    cpu_s: float  # user + system time of the whole process tree
    peak_memory_mb: float  # peak total RSS of the tree (sampled)
    message: str  # human readable, e.g. "command not found: foo"
    image: str | None = None  # a container job: the content id of the image that ran
    # A task's steps, each as it ended: exit_code, started_at, finished_at, log_start, log_end.
    steps: list[dict[str, Any]] = field(default_factory=list)


# --- process identity ---------------------------------------------------------------------------------


def _create_time(pid: int) -> float | None:
    info = supervise.read_stat(pid)
    return None if info is None else info.starttime / _CLK_TCK


def same_process(handle: Handle, info: supervise.ProcInfo | None) -> bool:
    if info is None:
        return False
    if handle.boot_id and handle.boot_id != supervise.boot_id():
        return False
    return abs(info.starttime / _CLK_TCK - handle.create_time) < 0.5 / _CLK_TCK


# Supervisors started by this server process are our children: they must be reaped, or they linger as
# zombies. (After a server restart they are adopted by init, which reaps them.)
_children: dict[int, subprocess.Popen[bytes]] = {}
_children_lock = threading.Lock()


def reap_children() -> None:
    with _children_lock:
        for pid, proc in list(_children.items()):
            if proc.poll() is not None:
                del _children[pid]


def is_alive(handle: Handle) -> bool:
    """True while the supervisor of ``handle`` runs (a zombie or a reused pid counts as dead)."""
    reap_children()
    info = supervise.read_stat(handle.pid)
    return same_process(handle, info) and info is not None and not info.dead


class Pidfd:
    """A pidfd on the supervisor: wait for its exit without polling, signal it without a pid-reuse race.

    Falls back to pid polling where pidfd_open is unavailable (Linux < 5.3).
    """

    def __init__(self, handle: Handle) -> None:
        self.handle = handle
        self.fd: int | None = None
        try:
            self.fd = os.pidfd_open(handle.pid)
        except ProcessLookupError:
            self.gone = True
            return
        except (OSError, AttributeError):
            self.fd = None
        # Check identity only after opening: from now on the pid cannot be reused under us.
        self.gone = not same_process(handle, supervise.read_stat(handle.pid))
        if self.gone:
            self.close()

    def exited(self, timeout: float = 0.0) -> bool:
        """True once the supervisor has exited; waits up to ``timeout`` for that."""
        if self.gone:
            return True
        if self.fd is not None:
            self.gone = supervise.readable([self.fd], timeout)
        else:
            deadline = time.monotonic() + timeout
            while is_alive(self.handle) and time.monotonic() < deadline:
                time.sleep(min(0.01, timeout))
            self.gone = not is_alive(self.handle)
        return self.gone

    def send(self, sig: int) -> None:
        if self.gone:
            return
        try:
            if self.fd is not None:
                signal.pidfd_send_signal(self.fd, sig)
            elif is_alive(self.handle):
                os.kill(self.handle.pid, sig)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


# --- launching ----------------------------------------------------------------------------------------


@functools.cache
def supervisor_program() -> str:
    """The supervisor as bytecode compiled once into a private cache folder.

    Running the ``.py`` would compile it at every job start (about 15 ms) whenever bytecode is not
    written next to the source (read-only installs, PYTHONDONTWRITEBYTECODE). Falls back to the source.
    """
    try:
        cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "labcloud"
        cache.mkdir(mode=0o700, parents=True, exist_ok=True)
        source = SUPERVISOR_SCRIPT.read_bytes()
        # Keyed by where the source is too: bytecode names its source file, and a traceback must name this
        # installation's, not another checkout's that happened to compile the same bytes first.
        key = b"\0".join((source, sys.version.encode(), str(SUPERVISOR_SCRIPT).encode()))
        digest = hashlib.sha256(key).hexdigest()[:16]
        target = cache / f"supervise-{digest}.pyc"
        if not target.exists():
            py_compile.compile(str(SUPERVISOR_SCRIPT), cfile=str(target), doraise=True)
        return str(target)
    except (OSError, py_compile.PyCompileError):
        return str(SUPERVISOR_SCRIPT)


def _spec_file(status_path: Path) -> Path:
    return status_path.with_name(f"{status_path.stem}.spec.json")


def lock_file(status_path: Path) -> Path:
    """Held (flock) by the supervisor for as long as it lives: who can take it knows it is gone."""
    return status_path.with_name("supervisor.lock")


def handle_file(status_path: Path) -> Path:
    """The supervisor's identity, written by itself before it starts the job."""
    return status_path.with_name("handle.json")


def find_supervisor(status_path: Path, wait_s: float = 10.0) -> Handle | None:
    """The supervisor of the attempt whose result goes to ``status_path`` while it still runs, else None.

    Needs nothing the server recorded: a server killed between starting a supervisor and writing down its
    handle finds it all the same, so a job is never started a second time beside a running one.
    """
    try:
        fd = os.open(lock_file(status_path), os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pass  # held: the supervisor lives
        else:
            return None
    finally:
        os.close(fd)  # (releases the lock if we took it)
    deadline = time.monotonic() + wait_s
    while True:  # it writes its handle first thing; a server may look a moment before
        try:
            return Handle.from_json(handle_file(status_path).read_text())
        except (OSError, ValueError, KeyError):
            if time.monotonic() > deadline:
                return None
            time.sleep(0.01)


def launch(spec: LaunchSpec) -> Handle:
    """Start a supervisor for ``spec`` and return its handle once the job has started.

    A job that cannot start (command not found, ...) is not an error here: its supervisor records
    "start_failed". Raises LaunchError if the supervisor itself fails, SandboxUnavailable if a sandbox is
    asked for but bwrap does not work, and OSError for unusable log/status paths.
    """
    if not spec.argv:
        raise ValueError("empty command")
    if spec.user is not None and (spec.sandbox is not None or spec.container is not None or spec.steps):
        raise ValueError("a job user of its own only for a command run without a sandbox")
    argv, retry_argv = (
        wrap_commands(spec.argv, spec.sandbox, spec.cwd)
        if spec.sandbox is not None
        else (list(spec.argv), None)
    )
    spec.status_path.unlink(missing_ok=True)  # a stale result would end watch() at once
    lock_fd = os.open(lock_file(spec.status_path), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        raise LaunchError(f"a supervisor already runs the job of {spec.status_path.parent}") from None
    ready_r, ready_w = os.pipe()
    spec_file = _spec_file(spec.status_path)
    payload = {
        "version": supervise.SPEC_VERSION,
        "argv": argv,
        "retry_argv": retry_argv,  # a sandbox that failed over a changing mount starts again with this
        "cwd": str(spec.cwd),
        "env": dict(spec.env),
        "log_path": str(spec.log_path),
        "log_times": spec.log_times,
        "status_path": str(spec.status_path),
        "timeout_s": spec.limits.timeout_s,
        "memory_mb": spec.limits.memory_mb,
        "grace_s": spec.limits.grace_s,
        "sandboxed": spec.sandbox is not None,
        "user": None if spec.user is None else [spec.user.uid, spec.user.gid],
        "ready_fd": ready_w,
        "lock_fd": lock_fd,  # the supervisor inherits our hold on the lock and keeps it to its end
        "handle_path": str(handle_file(spec.status_path)),
        "container": spec.container,
        "engine_env": spec.engine_env,
        "program": spec.program or spec.argv[0],
        "image": spec.image,
        "steps": spec.steps,
    }
    proc: subprocess.Popen[bytes] | None = None
    handle: Handle | None = None
    try:
        # 0600: the job's environment may hold its access token.
        fd = os.open(spec_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(payload, f)
        # The supervisor's own problems (a traceback) end up in the job log.
        log_fd = os.open(spec.log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                started = LAUNCHER.start(spec_file, (ready_w, lock_fd, log_fd))
            except _Unanswered:
                started = None  # it may have started: the ready pipe tells, and its lock finds it
                proc_unknown = True
            else:
                proc_unknown = False
            if started is not None:
                pid, ticks = started
                handle = Handle(pid=pid, create_time=ticks / _CLK_TCK, boot_id=supervise.boot_id())
            elif not proc_unknown:  # no launcher here: an interpreter of its own
                proc = subprocess.Popen(
                    [sys.executable, "-S", supervisor_program(), str(spec_file)],
                    stdin=subprocess.DEVNULL,
                    stdout=log_fd,
                    stderr=log_fd,
                    pass_fds=(ready_w, lock_fd),
                    start_new_session=True,  # not in the server's process group or session: survives it
                    cwd="/",
                    env={"PATH": os.defpath},  # nothing of the server's environment (secrets) leaks
                )
        finally:
            os.close(log_fd)
    except BaseException:
        os.close(ready_r)
        spec_file.unlink(missing_ok=True)
        raise
    finally:
        os.close(ready_w)
        os.close(lock_fd)  # the supervisor's copy holds the lock from now on
    if proc is not None:
        with _children_lock:
            _children[proc.pid] = proc
        # Read the identity while the supervisor is our unreaped child: its pid cannot be reused yet.
        handle = Handle(pid=proc.pid, create_time=_create_time(proc.pid) or 0.0, boot_id=supervise.boot_id())
    try:
        ready = _await_ready(ready_r, READY_TIMEOUT_S)
    finally:
        os.close(ready_r)
    if ready and handle is None:
        handle = find_supervisor(spec.status_path)
    if not ready or handle is None:
        if proc is not None:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            status = f"exit status {proc.returncode}"
        else:
            if handle is not None:
                sup = Pidfd(handle)
                sup.send(signal.SIGKILL)
                sup.close()
            status = "started by the launcher"
        spec_file.unlink(missing_ok=True)
        raise LaunchError(f"job supervisor did not start ({status}); see the end of {spec.log_path}")
    return handle


class _Unanswered(Exception):
    """The launcher took a request and died (or hung) before it answered."""


class Launcher:
    """This process's warm launcher (see the end of ``supervise.py``): started at the first launch, again
    when it died. Where it cannot start, each supervisor is a new interpreter (``enabled`` False: always)."""

    RETRY_AFTER_S = 60.0

    def __init__(self) -> None:
        self.enabled = True
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._failed_at: float | None = None

    def start(self, spec_file: Path, fds: tuple[int, int, int]) -> tuple[int, int] | None:
        """Ask for a supervisor of ``spec_file`` (with its ready, lock and log descriptors): its pid and
        start time in clock ticks; None when there is no launcher (nothing was started)."""
        if not self.enabled:
            return None
        with self._lock:
            for _ in range(2):
                sock = self._sock or self._open()
                if sock is None:
                    return None
                try:
                    socket.send_fds(sock, [str(spec_file).encode()], list(fds))
                except OSError:  # it had died: nothing was asked of it, so a new one may be
                    self._close()
                    continue
                try:
                    answer = sock.recv(256).decode()
                except OSError:
                    answer = ""
                if not answer:
                    self._close()
                    raise _Unanswered
                if answer.startswith("error"):
                    raise LaunchError(f"the job launcher could not start a supervisor: {answer}")
                pid, ticks = answer.split()
                return int(pid), int(ticks)
            return None

    def stop(self) -> None:
        """Let the launcher go (it exits when its socket closes) and reap it; the supervisors it started
        run on. The next launch starts a new one."""
        with self._lock:
            proc = self._proc
            if self._sock is not None:
                self._sock.close()
                self._sock = None
            self._proc = None
        if proc is not None:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def _open(self) -> socket.socket | None:
        if self._failed_at is not None and time.monotonic() - self._failed_at < self.RETRY_AFTER_S:
            return None
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            self._proc = subprocess.Popen(
                [sys.executable, "-S", supervisor_program(), "--launcher", str(theirs.fileno())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,  # a Ctrl-C at the server's terminal is the server's
                cwd="/",
                env={"PATH": os.defpath},  # nothing of the server's environment (secrets) leaks
            )
        except OSError:
            ours.close()
            self._failed_at = time.monotonic()
            return None
        finally:
            theirs.close()
        ours.settimeout(READY_TIMEOUT_S)
        self._sock, self._failed_at = ours, None
        return ours

    def _close(self) -> None:
        if self._sock is not None:
            self._sock.close()  # a launcher still alive reads the end and exits
            self._sock = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.kill()
            with _children_lock:
                _children[self._proc.pid] = self._proc  # reaped with the supervisors
            self._proc = None


LAUNCHER = Launcher()


def _await_ready(fd: int, timeout: float) -> bool:
    """Wait for the supervisor's "ok" (sent once its signal handlers are in place and the job started)."""
    deadline = time.monotonic() + timeout
    data = b""
    while b"\n" not in data:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not supervise.readable([fd], remaining):
            return False
        chunk = os.read(fd, 64)
        if not chunk:
            return False  # the supervisor exited without saying ok
        data += chunk
    return data.startswith(b"ok")


# --- results ------------------------------------------------------------------------------------------

_OUTCOMES = frozenset(
    ("exited", "timeout", "out_of_memory", "cancelled", "start_failed", "image_unavailable", "lost")
)


def read_result(status_path: Path) -> ProcessResult | None:
    """The result recorded by the supervisor, or None while there is none."""
    try:
        with open(status_path, "rb") as f:
            d = json.load(f)
    except FileNotFoundError:
        return None
    except ValueError:
        return None  # cannot happen with the atomic rename, but never crash a watcher over it
    outcome = d.get("outcome")
    if outcome not in _OUTCOMES:
        return None
    code = d.get("exit_code")
    return ProcessResult(
        outcome=cast(Outcome, outcome),
        exit_code=None if code is None else int(code),
        wall_s=float(d.get("wall_s", 0.0)),
        cpu_s=float(d.get("cpu_s", 0.0)),
        peak_memory_mb=float(d.get("peak_memory_mb", 0.0)),
        message=str(d.get("message", "")),
        image=str(d["image"]) if d.get("image") else None,
        steps=[step for step in d.get("steps") or [] if isinstance(step, dict)],
    )


def cancel(handle: Handle) -> None:
    """Ask the supervisor to stop the job (SIGTERM, grace, SIGKILL); it records "cancelled".

    A no-op if the supervisor is gone already.
    """
    sup = Pidfd(handle)
    try:
        sup.send(signal.SIGTERM)
    finally:
        sup.close()
