"""Supervisor of one job: ``python -S supervise.py SPEC.json``.

Started detached (own session) by :func:`labcloud.execution.process.launch`, so it outlives a crash of the
server. It runs the job command, enforces the time and memory limits, turns SIGTERM (a cancel) into
TERM → grace → KILL of the job's whole process tree, and finally writes the outcome atomically to the
status file. It is a child sub-reaper, so processes the job leaves behind (double forks, ``setsid``) stay
in its tree: they are found, killed and reaped, and their CPU time is counted. A job's processes never
outlive the job: what is left when its main process exits is killed.

Stdlib only and no labcloud imports: it runs by file path with ``-S`` to start in a few milliseconds.
:mod:`labcloud.execution.process` imports the /proc helpers below.
"""

from __future__ import annotations

import ctypes
import functools
import json
import os
import resource
import select
import signal
import sys
import time

# No "import typing": it costs milliseconds at every job start. Type checkers treat this name as True.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

SPEC_VERSION = 1
SANDBOX_TRIES = 6  # starts of a sandbox that met a host mount going away (see Supervisor.run)
SAMPLE_S = 0.1  # memory sampling period with a memory limit...
SAMPLE_IDLE_S = 0.5  # ...and without one, when only the peak is of interest
PR_SET_PDEATHSIG = 1
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
_PAGE = os.sysconf("SC_PAGE_SIZE")


# --- /proc helpers (shared with process.py) ---------------------------------------------------------


class ProcInfo:
    """The fields of /proc/PID/stat we need."""

    __slots__ = ("comm", "pgrp", "pid", "ppid", "rss_bytes", "session", "starttime", "state")

    def __init__(
        self,
        pid: int,
        comm: str,
        state: str,
        ppid: int,
        pgrp: int,
        session: int,
        starttime: int,
        rss_bytes: int,
    ) -> None:
        self.pid = pid
        self.comm = comm
        self.state = state  # R, S, D, Z, ...
        self.ppid = ppid
        self.pgrp = pgrp
        self.session = session
        self.starttime = starttime  # clock ticks since boot
        self.rss_bytes = rss_bytes

    @property
    def dead(self) -> bool:
        """Exited: a zombie, or being reaped right now."""
        return self.state in ("Z", "X", "x")


def readable(fds: list[int], timeout: float) -> bool:
    """Whether one of ``fds`` is readable within ``timeout`` seconds. ``poll``, not ``select``: a busy
    server holds descriptors numbered past 1,024 (``FD_SETSIZE``), where ``select`` refuses to wait."""
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    return bool(poller.poll(max(timeout, 0.0) * 1000))


def read_stat(pid: int) -> ProcInfo | None:
    """Parse /proc/PID/stat; None if the process is gone."""
    # os.open/os.read rather than open(): this runs for every process on the host, ten times a second.
    try:
        fd = os.open(f"/proc/{pid}/stat", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        data = os.read(fd, 4096)
    except OSError:
        return None
    finally:
        os.close(fd)
    # comm may contain spaces and parentheses: it ends at the *last* ")".
    lpar, rpar = data.find(b"("), data.rfind(b")")
    fields = data[rpar + 2 :].split()
    try:
        return ProcInfo(
            pid=pid,
            comm=data[lpar + 1 : rpar].decode(errors="replace"),
            state=fields[0].decode(),
            ppid=int(fields[1]),
            pgrp=int(fields[2]),
            session=int(fields[3]),
            starttime=int(fields[19]),
            rss_bytes=int(fields[21]) * _PAGE,
        )
    except (IndexError, ValueError):
        return None


def process_table() -> dict[int, ProcInfo]:
    """A snapshot of all processes (their main threads) on the host."""
    table: dict[int, ProcInfo] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            info = read_stat(int(name))
            if info is not None:
                table[info.pid] = info
    return table


def kill(pid: int, sig: int) -> bool:
    """Send a signal; False if the process is already gone."""
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return False
    return True


def descendants(root: int, table: dict[int, ProcInfo]) -> list[ProcInfo]:
    """All processes below ``root`` in ``table``, parents before children."""
    children: dict[int, list[ProcInfo]] = {}
    for info in table.values():
        children.setdefault(info.ppid, []).append(info)
    out: list[ProcInfo] = []
    todo = [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            out.append(child)
            todo.append(child.pid)
    return out


def below(root: int) -> list[ProcInfo]:
    """All processes below ``root``, parents before children, through the kernel's lists of each thread's
    children: what a job left behind costs a few reads, not a scan of every process on the host."""
    out: list[ProcInfo] = []
    todo = [root]
    while todo:
        pid = todo.pop()
        try:
            threads = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue  # gone meanwhile
        for tid in threads:
            try:
                fd = os.open(f"/proc/{pid}/task/{tid}/children", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue
            try:
                data = b""
                while chunk := os.read(fd, 65536):
                    data += chunk
            except OSError:
                data = b""
            finally:
                os.close(fd)
            for child in data.split():
                info = read_stat(int(child))
                if info is not None:
                    out.append(info)
                    todo.append(info.pid)
    return out


# The kernel lists each thread's children (CONFIG_PROC_CHILDREN, on in the common distributions' kernels).
CHILD_LISTS = os.path.exists(f"/proc/self/task/{os.getpid()}/children")


# --- the supervisor -----------------------------------------------------------------------------------


_libc = ctypes.CDLL(None, use_errno=True)


def _prctl(option: int, arg: int) -> None:
    if _libc.prctl(option, arg, 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _exec_failure(cmd: str, reason: str) -> str:
    if reason == "No such file or directory":
        return f"command not found: {cmd}"
    if reason == "Permission denied":
        return f"command not executable: {cmd}"
    return f"cannot execute {cmd}: {reason}"


def _bwrap_start_error(first_line: str) -> str | None:
    """Our message for a failure of the sandbox before the command ran, from its first stderr line: bwrap's
    own, or that of setpriv, which starts the command as the job's user."""
    if first_line.startswith("setpriv: failed to execute "):
        cmd, _, reason = first_line[len("setpriv: failed to execute ") :].strip().rpartition(": ")
        return _exec_failure(cmd, reason)
    if first_line.startswith("setpriv: "):
        return f"sandbox failed to start: {first_line.strip()}"
    if not first_line.startswith("bwrap: "):
        return None
    detail = first_line[len("bwrap: ") :].strip()
    if detail.startswith("execvp "):
        cmd, _, reason = detail[len("execvp ") :].rpartition(": ")
        return _exec_failure(cmd, reason)
    return f"sandbox failed to start: {detail}"


@functools.cache
def boot_id() -> str:
    """This boot's id (it names the boot a process handle belongs to; read once per process)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            return f.read().strip()
    except OSError:
        return ""


def _write_atomically(path: str, data: bytes) -> None:
    """A reader sees the old file or the whole new one, also after a crash (fsync'd, rename made durable)."""
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dfd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


def open_below(root: str, rel: str, flags: int, owner: list[int] | None) -> int:
    """Open ``root/rel`` without following a link anywhere below ``root`` (a job may have planted one):
    each folder is entered relative to the one before it. A file it creates is ``owner``'s (uid, gid);
    anything but a regular file is refused."""
    parts = [p for p in rel.split("/") if p]
    if not parts or any(p in (".", "..") for p in parts):
        raise ValueError(f"not a path below the task's folder: {rel!r}")
    folder = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            inner = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder)
            os.close(folder)
            folder = inner
        opening = (flags & ~os.O_TRUNC) | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
        fd = os.open(parts[-1], opening, 0o644, dir_fd=folder)
    finally:
        os.close(folder)
    try:
        info = os.fstat(fd)
        if not (info.st_mode & 0o170000 == 0o100000):  # S_ISREG, without importing stat
            raise ValueError(f"{rel}: not a regular file")
        if info.st_nlink != 1 and flags & os.O_WRONLY:
            raise ValueError(f"{rel}: a hard link")
        if owner and flags & os.O_CREAT and info.st_uid != owner[0]:
            os.fchown(fd, owner[0], owner[1])
        if flags & os.O_TRUNC:
            os.ftruncate(fd, 0)
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _inner_pid(pid: int) -> int | None:
    """The pid of a process in its own (innermost) pid namespace."""
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith(b"NSpid:"):
                    return int(line.split()[-1])
    except (OSError, ValueError):
        pass
    return None


def _own_peak_rss() -> int:
    """Our VmHWM in bytes (the high-water mark of our own address space)."""
    with open("/proc/self/status", "rb") as f:
        for line in f:
            if line.startswith(b"VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


def _container_state(text: str) -> tuple[bool, int | None, int]:
    """(killed for memory, exit code, pid) from ``inspect --format '{{.State.OOMKilled}} {{.State.ExitCode}}
    {{.State.Pid}}'``; (False, None, 0) for nothing."""
    parts = text.split()
    oom = bool(parts) and parts[0].lower() == "true"
    code = int(parts[1]) if len(parts) > 1 and parts[1].lstrip("-").isdigit() else None
    pid = int(parts[2]) if len(parts) > 2 and parts[2].isdigit() else 0
    return oom, code, pid


def _no_image(words: str) -> bool:
    """The engine's words for an image it does not have (Docker's, Podman's)."""
    lowered = words.lower()
    return "no such image" in lowered or "unable to find image" in lowered or "image not known" in lowered


def _mounts_changed(result: dict[str, Any]) -> bool:
    """The sandbox failed to start over a mount of the host that changed while it copied them."""
    message = str(result.get("message", ""))
    return (
        result.get("outcome") == "start_failed"
        and message.startswith("sandbox failed to start")
        and ("mount" in message.lower() or "Invalid argument" in message or "No such file" in message)
    )


def _engine_error(line: str) -> bool:
    """A line the engine's client wrote about its own failure (not the job's output)."""
    return (
        line.startswith(("docker: ", "Error: ", "Error response from daemon", "Error "))
        or "OCI runtime" in line
    )


def _cgroup_files(pid: int) -> tuple[str | None, str | None]:
    """The files holding the CPU time and the peak memory of the control groups of process ``pid``."""
    cpu = peak = None
    try:
        with open(f"/proc/{pid}/cgroup") as f:
            lines = f.read().splitlines()
    except OSError:
        return None, None
    for line in lines:
        _, controllers, path = line.split(":", 2)
        names = controllers.split(",")
        if "cpuacct" in names:
            cpu = f"/sys/fs/cgroup/{controllers}{path}/cpuacct.usage"
        if "memory" in names:
            peak = f"/sys/fs/cgroup/{controllers}{path}/memory.max_usage_in_bytes"
        if controllers == "" and cpu is None and os.path.exists(f"/sys/fs/cgroup{path}/cpu.stat"):
            cpu = f"/sys/fs/cgroup{path}/cpu.stat"
            peak = f"/sys/fs/cgroup{path}/memory.peak"
    return cpu, peak


def _parent_cgroup_dirs(parent: list[str] | None) -> list[str]:
    """The folders of a container's parent group: one in each mounted hierarchy (cgroup v1 and the unified
    one beside it), or the one of cgroup v2."""
    if not parent:
        return []
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):
        return [f"/sys/fs/cgroup{parent[0]}"]
    try:
        return [
            f"{e.path}{parent[0]}" for e in os.scandir("/sys/fs/cgroup") if e.is_dir(follow_symlinks=False)
        ]
    except OSError:
        return []


def _remove_groups(folders: list[str], budget_s: float = 2.0) -> None:
    """Remove a container's parent groups (the container's own group inside goes first; the engine may
    take a moment to let go of it)."""
    deadline = time.monotonic() + budget_s
    left = [f for f in folders if os.path.isdir(f)]
    while left:
        for folder in list(left):
            try:
                for entry in os.scandir(folder):
                    if entry.is_dir(follow_symlinks=False):
                        os.rmdir(entry.path)
                os.rmdir(folder)
                left.remove(folder)
            except FileNotFoundError:
                left.remove(folder)
            except OSError:
                pass
        if not left or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def _parent_cgroup_files(parent: str) -> tuple[str | None, str | None]:
    if os.path.exists("/sys/fs/cgroup/cgroup.controllers"):  # cgroup v2
        return f"/sys/fs/cgroup{parent}/cpu.stat", f"/sys/fs/cgroup{parent}/memory.peak"
    cpu = f"/sys/fs/cgroup/cpuacct{parent}/cpuacct.usage"
    if not os.path.isdir("/sys/fs/cgroup/cpuacct"):
        cpu = f"/sys/fs/cgroup/cpu,cpuacct{parent}/cpuacct.usage"
    return cpu, f"/sys/fs/cgroup/memory{parent}/memory.max_usage_in_bytes"


def _read_number(path: str | None) -> float | None:
    """A control group's counter (cpu.stat: its usage_usec)."""
    if path is None:
        return None
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return None
    if path.endswith("cpu.stat"):
        for line in text.splitlines():
            if line.startswith("usage_usec "):
                return float(line.split()[1])
        return None
    try:
        return float(text.strip())
    except ValueError:
        return None


class Supervisor:
    """Runs one job according to a spec dict (see process.launch for its fields)."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.me = os.getpid()
        self.timeout_s: float | None = spec.get("timeout_s")
        self.memory_mb: int | None = spec.get("memory_mb")
        self.grace_s: float = float(spec.get("grace_s", 5.0))
        self.sandboxed = bool(spec.get("sandboxed"))
        self.last_try = True  # False while a sandbox that fails over a changing mount is started again
        # A container job: our child is the engine's client; the engine enforces the memory limit and we
        # stop, inspect and remove the container with these command lines (see execution/containers.py).
        self.container: dict[str, list[str]] | None = spec.get("container")
        if self.container is not None or spec.get("steps"):
            self.memory_mb = None
        self.container_pid = 0  # the container's first process, once the engine has started it
        self.cgroup_files: tuple[str | None, str | None] | None = None  # (cpu usage, peak memory)
        self.container_cpu_s = 0.0
        self.image_id: str | None = None
        self.cancel_requested = False
        self.reason: str | None = None  # "timeout" | "cancelled" | "out_of_memory" once we stop the job
        self.main_pid: int | None = None
        self.main_status: int | None = None  # raw wait status of the job's top process
        # Sandbox only: the job's command (pid 2 in the sandbox) once found, and whether the outer bwrap
        # is held stopped (see _hold_sandbox).
        self.job_pidfd: int | None = None
        self.outer_held = False
        self.sandbox_init: int | None = None  # bwrap's pid 1, remembered: it becomes our child later
        self.hold_pending = self.sandboxed
        self.peak_bytes = 0
        self.oom_usage_mb = 0.0
        self.started_at = time.time()  # wall clock and monotonic start of the job, set again at spawn
        self.t0 = time.monotonic()
        # O_RDWR so that _log can peek at the last byte; O_APPEND so the job and we never overwrite.
        self.log_fd = os.open(spec["log_path"], os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        # "<size> <ms>" lines: by that time the log held that many bytes (what gives its lines their times;
        # for the server's own job log only: a remote runner's are timed as its chunks arrive).
        self.times_fd: int | None = None
        if spec.get("log_times"):
            times = spec["log_path"] + ".times"
            self.times_fd = os.open(times, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        self.marked = -1
        self._mark()
        self.wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
        signal.signal(signal.SIGTERM, self._on_cancel)
        signal.signal(signal.SIGINT, self._on_cancel)
        # A Python-level handler is what makes SIGCHLD write to the wakeup fd and interrupt select().
        signal.signal(signal.SIGCHLD, lambda *_: None)

    def _on_cancel(self, signum: int, frame: object) -> None:
        self.cancel_requested = True

    # --- output -----------------------------------------------------------------------------------

    def _log(self, message: str) -> None:
        """Append one line of our own to the job log, starting on a fresh line."""
        prefix = b""
        size = os.fstat(self.log_fd).st_size
        if size and os.pread(self.log_fd, 1, size - 1) != b"\n":
            prefix = b"\n"
        os.write(self.log_fd, prefix + f"[labcloud] {message}\n".encode())
        self._mark()

    def _mark(self) -> None:
        """Note the log's size and the time, when it has grown since the last note."""
        if self.times_fd is None:
            return
        size = os.fstat(self.log_fd).st_size
        if size != self.marked:
            os.write(self.times_fd, f"{size} {int(time.time() * 1000)}\n".encode())
            self.marked = size

    def _write_status(self, result: dict[str, Any]) -> None:
        """Write the result JSON atomically: a reader sees the old state or the whole file."""
        _write_atomically(self.spec["status_path"], json.dumps(result).encode())

    def _write_handle(self) -> None:
        """Who we are, for a server that restarts while we run: it finds us by our lock, then this."""
        path = self.spec.get("handle_path")
        if not path:
            return
        info = read_stat(self.me)
        ticks = os.sysconf("SC_CLK_TCK")
        handle = {
            "pid": self.me,
            "create_time": (info.starttime / ticks) if info else 0.0,
            "boot_id": boot_id(),
        }
        _write_atomically(path, json.dumps(handle).encode())

    # --- process tree -----------------------------------------------------------------------------

    def _reap(self) -> None:
        """Collect every exited child (the job and adopted orphans); remember the job's status."""
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.main_pid:
                self.main_status = status

    def _tree(self) -> list[ProcInfo]:
        return below(self.me) if CHILD_LISTS else descendants(self.me, process_table())

    def _bwrap_pids(self, tree: list[ProcInfo]) -> set[int]:
        """The outer bwrap and the sandbox's pid 1 (also bwrap); empty without a sandbox."""
        if not self.sandboxed or self.main_pid is None:
            return set()
        pids = {self.main_pid} | {i.pid for i in tree if i.ppid == self.main_pid and i.comm == "bwrap"}
        if self.sandbox_init is not None:
            pids.add(self.sandbox_init)
        return pids

    def _signal_job(self, sig: int) -> None:
        """Send ``sig`` to the job's processes, but not to bwrap's.

        The outer bwrap would die on SIGTERM and take the sandbox down with SIGKILL, denying the job its
        grace period; once the job's main process is gone, bwrap exits by itself.
        """
        tree = self._tree()
        spare = self._bwrap_pids(tree)
        for info in tree:
            if not info.dead and info.pid not in spare:
                kill(info.pid, sig)
        if not self.sandboxed and self.main_pid is not None and self.main_status is None:
            # Also the job's process group, which catches a child forked after our /proc snapshot. Only
            # while the group leader is unreaped: until then its pid (the group id) cannot be reused.
            try:
                os.killpg(self.main_pid, sig)
            except (ProcessLookupError, PermissionError):
                return  # the group is empty

    def _kill_tree(self, budget_s: float = 10.0) -> int:
        """SIGKILL the job's processes until none is left; return how many were killed.

        In the sandbox bwrap itself goes last: its pid 1 reaps the job's processes as they die, which adds
        their CPU time to ours. Killed first, the kernel would reap them in its stead while tearing the
        namespace down, and their CPU time would be lost. Once only bwrap is left it exits by itself.
        """
        killed: set[int] = set()
        start = time.monotonic()
        while True:
            self._reap()
            tree = self._tree()
            if not tree:
                return len(killed)
            elapsed = time.monotonic() - start
            bwrap = self._bwrap_pids(tree) if elapsed < 1.0 else set()
            alive = [i for i in tree if not i.dead and i.pid not in bwrap]
            for info in alive:
                killed.add(info.pid)
                kill(info.pid, signal.SIGKILL)
            if not alive and self.outer_held and self.main_pid is not None:
                self.outer_held = False
                kill(self.main_pid, signal.SIGCONT)  # let it report the exit status and go
            if elapsed > budget_s:
                # Only a process stuck in the kernel (state D) survives SIGKILL this long.
                self._log(f"could not kill processes {sorted(i.pid for i in tree)}; giving up")
                return len(killed)
            self._wait(0.005)

    def _hold_sandbox(self) -> None:
        """Stop the outer bwrap once the job runs, and watch the job's command through a pidfd instead.

        When the command exits, bwrap's pid 1 reports its status to the outer bwrap, which exits at once;
        pid 1 then dies with it (--die-with-parent) and the kernel kills and silently reaps whatever the
        job left running, without counting its CPU time. Held, the outer bwrap cannot exit before
        _kill_tree has killed those processes, so that pid 1 reaps (and counts) them.
        """
        if self.main_pid is None:
            return
        tree = self._tree()
        inits = [i.pid for i in tree if i.ppid == self.main_pid and i.comm == "bwrap"]
        if not inits:
            return
        self.sandbox_init = inits[0]
        for info in tree:
            # The command is pid 2 inside; the sandbox is fully set up once it exists.
            if info.ppid == self.sandbox_init and _inner_pid(info.pid) == 2:
                self.hold_pending = False
                try:
                    self.job_pidfd = os.pidfd_open(info.pid)
                except OSError:
                    return  # no pidfds (Linux < 5.3): let the job end the usual way
                self.outer_held = kill(self.main_pid, signal.SIGSTOP)
                return

    def _job_exited(self) -> bool:
        """Whether the job's main process is over."""
        if self.main_status is not None:
            return True
        return self.job_pidfd is not None and readable([self.job_pidfd], 0)

    def _sample_memory(self) -> float:
        """Total RSS of the job's tree in bytes; also tracks the peak."""
        if self.container is not None:
            self._sample_container()
            return 0.0
        total = sum(info.rss_bytes for info in self._tree())
        self.peak_bytes = max(self.peak_bytes, total)
        return total

    # --- containers ---------------------------------------------------------------------------------

    def _engine(self, what: str, wait: bool = True) -> str:
        """Run one of the container's command lines (stop, kill, inspect, remove); its output."""
        import subprocess  # (lazily: only container jobs need it)

        assert self.container is not None
        argv = self.container[what]
        env = self.spec.get("engine_env") or {"PATH": os.defpath}
        try:
            if not wait:
                subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    start_new_session=True,
                )
                return ""
            done = subprocess.run(argv, env=env, stdin=subprocess.DEVNULL, capture_output=True, timeout=30)
        except (OSError, subprocess.SubprocessError) as exc:
            self._log(f"container {what} failed: {exc}")
            return ""
        return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else ""

    def _remove_container(self) -> None:
        """Remove the container and its parent groups in a child of ours that outlives us, so that the
        attempt's end is not held up by the engine (a few hundred ms); a container left behind by a crash
        here is removed by the next server that leads (by its name)."""
        assert self.container is not None
        if os.fork() != 0:
            return
        try:
            lock = self.spec.get("lock_fd")
            if lock is not None:
                os.close(lock)  # the attempt's lock says whether *we* live, not our helper
            self._engine("remove")
            _remove_groups(_parent_cgroup_dirs(self.container.get("cgroup_parent")))
        finally:
            os._exit(0)

    def _sample_container(self) -> None:
        """CPU time and peak memory of the container, from its control groups, while it runs."""
        if self.cgroup_files is None:
            assert self.container is not None
            parent = self.container.get("cgroup_parent")
            if parent:  # its own parent group, which outlives it
                self.cgroup_files = _parent_cgroup_files(parent[0])
            else:
                if time.monotonic() - self.t0 < 0.05:
                    return
                _, _, pid = _container_state(self._engine("inspect"))
                if not pid:
                    return
                self.container_pid = pid
                self.cgroup_files = _cgroup_files(pid)
        cpu_file, peak_file = self.cgroup_files
        cpu = _read_number(cpu_file)
        if cpu is not None and cpu_file is not None:
            self.container_cpu_s = cpu / (1e9 if cpu_file.endswith("cpuacct.usage") else 1e6)
        peak = _read_number(peak_file)
        if peak is not None:
            self.peak_bytes = max(self.peak_bytes, int(peak))

    def _container_result(self, state: str, log_start: int) -> dict[str, Any]:
        """The end of a container job (see :meth:`_container_end`)."""
        return self._finish(*self._container_end(state, log_start))

    def _container_end(self, state: str, log_start: int, step: bool = False) -> tuple[str, int | None, str]:
        """How a container ended (outcome, exit code, message): the engine's report (killed for memory,
        exit code) and the client's exit status, which is the container's, or 125-127 with the engine's
        words when it did not start (a task's ``step`` then exits with that code, said in the log, unless
        its image is missing)."""
        oom, code, _ = _container_state(state)
        parts = state.split()
        if len(parts) > 3 and self.image_id is None:  # the content id of the image it ran (of a task's first
            # step); Podman's lacks the algorithm
            self.image_id = parts[3] if parts[3].startswith("sha256:") else f"sha256:{parts[3]}"
        client = None if self.main_status is None else os.waitstatus_to_exitcode(self.main_status)
        if self.reason == "timeout":
            return "timeout", None, f"time limit of {self.timeout_s:g} s exceeded"
        if self.reason == "cancelled":
            return "cancelled", None, "cancelled"
        limit = int(self.spec.get("memory_mb") or 0)
        # Killed (SIGKILL: 137) after its memory reached the limit is the kernel's OOM killer, also where the
        # engine does not say so (Podman with runc on cgroup v1).
        reached = limit > 0 and self.peak_bytes >= 0.97 * limit * 2**20
        # Podman 4's conmon leaves a file "oom" in the client's folder instead of telling inspect.
        oom = oom or os.path.exists(os.path.join(self.spec["cwd"], "oom"))
        if oom or (client == 137 and reached):
            self.memory_mb = limit
            return "out_of_memory", None, f"memory limit of {limit} MB exceeded"
        if client is not None and client >= 0:
            code = client  # the client exits with the container's status (its own errors: 125-127)
        if code is None:
            code = -signal.SIGKILL if client is None else client
        if code in (125, 126, 127):
            tail = os.pread(self.log_fd, 16384, log_start).decode(errors="replace").strip().splitlines()
            words = next((line for line in reversed(tail) if _engine_error(line)), None)
            if words is not None and code == 125 and _no_image(words):
                message = f"image {self.spec.get('image', '?')} is not available: {words}"
                self._log(message)
                return "image_unavailable", None, message
            if words is not None:
                if "executable file not found" in words or "no such file or directory" in words.lower():
                    words = f"command not found in the image: {self.spec.get('program', '?')} ({words})"
                message = f"the container could not be started: {words}"
                self._log(message)
                if not step:
                    return "start_failed", None, message
        msg = f"exited with code {code}" if code >= 0 else f"killed by {_signal_name(-code)}"
        return "exited", code, msg

    def _wait(self, timeout: float) -> None:
        """Sleep until a signal arrives (child exit, cancel) or ``timeout`` passes."""
        if timeout > 0:
            fds = [self.wake_r] if self.job_pidfd is None else [self.wake_r, self.job_pidfd]
            readable(fds, timeout)
        try:
            while os.read(self.wake_r, 512):
                pass
        except BlockingIOError:
            pass

    # --- main -------------------------------------------------------------------------------------

    def _start(self) -> int | str:
        """Start the job: its pid, or the start_failed message."""
        argv: list[str] = self.spec["argv"]
        if not argv:
            return "invalid command: empty"
        try:
            if self.container is not None:
                return self._spawn_client(argv)
            return self._spawn_sandboxed(argv) if self.sandboxed else self._spawn_plain(argv)
        except OSError as exc:
            if exc.filename == self.spec["cwd"]:
                return f"cannot use working directory {exc.filename}: {exc.strerror}"
            if isinstance(exc, FileNotFoundError):
                return f"command not found: {argv[0]}"
            if isinstance(exc, PermissionError):
                return f"command not executable: {argv[0]}"
            return f"cannot execute {argv[0]}: {exc.strerror or exc}"
        except (ValueError, TypeError) as exc:  # e.g. a NUL byte in an argument
            return f"invalid command: {exc}"

    def _spawn_sandboxed(self, argv: list[str]) -> int:
        # argv[0] is the absolute path of bwrap, which does the chdir, PATH lookup and die-with-parent
        # itself, so plain posix_spawn will do (and saves importing subprocess).
        return self._posix_spawn(argv)

    def _posix_spawn(self, argv: list[str], streams: dict[int, int] | None = None) -> int:
        """Spawn ``argv[0]`` (an absolute path) in a process group of its own, its output to the log;
        ``streams``: other files for its standard streams (fd in the supervisor → 0, 1, 2)."""
        return os.posix_spawn(
            argv[0],
            argv,
            self.spec["env"],
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, self.log_fd, 1),
                (os.POSIX_SPAWN_DUP2, self.log_fd, 2),
                *((os.POSIX_SPAWN_DUP2, fd, target) for target, fd in (streams or {}).items()),
            ],
            setpgroup=0,
            # Python ignores these; an ignored signal would stay ignored in the job.
            setsigdef=(signal.SIGPIPE, signal.SIGXFSZ),
        )

    def _spawn_client(self, argv: list[str], streams: dict[int, int] | None = None) -> int:
        """The engine's client: spawned directly (no fork of ours to run Python in), in the attempt's folder
        (where Podman's conmon leaves its "oom" mark). It needs no death signal: a container outlives its
        client anyway, and a server that finds us gone removes it."""
        os.chdir(self.spec["cwd"])
        return self._posix_spawn(argv, streams)  # (streams: a task step's files of its own)

    def _spawn_plain(self, argv: list[str]) -> int:
        import subprocess  # (lazily: the sandboxed path does not need it)

        me = self.me
        # [uid, gid]: run by root without a sandbox, the job still runs as an unprivileged host user. Popen
        # drops to it in the child (groups, then gid, then uid; the working folder is entered before), and
        # with that user every capability goes.
        user: list[int] | None = self.spec.get("user")

        def die_with_supervisor() -> None:
            if user is not None:  # no setuid program gives root back (su, a sudo left over)
                _prctl(PR_SET_NO_NEW_PRIVS, 1)
                if os.getuid() == 0 or os.geteuid() == 0 or os.getgid() == 0 or os.getgroups():
                    os._exit(126)
            # The job gets SIGKILL if we die, like bwrap --die-with-parent does for sandboxed jobs. (After
            # the change of user, which would clear it.)
            _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
            if os.getppid() != me:  # we died before prctl took effect
                os._exit(1)

        proc = subprocess.Popen(
            argv,
            cwd=self.spec["cwd"],
            env=self.spec["env"],  # Popen looks the command up in this env's PATH
            stdin=subprocess.DEVNULL,
            stdout=self.log_fd,
            stderr=self.log_fd,
            process_group=0,
            preexec_fn=die_with_supervisor,
            user=None if user is None else user[0],
            group=None if user is None else user[1],
            extra_groups=None if user is None else [],
        )
        # We reap it ourselves with waitpid(-1); tell Popen so it never waits or warns about it.
        proc.returncode = 0
        return proc.pid

    def run(self) -> dict[str, Any]:
        """Run the job to the end and return the result dict (also written to the status file)."""
        # Orphans are re-parented to us instead of init, so they stay in our tree: we can kill them, reap
        # them and count their CPU time. That covers double forks and setsid daemons of unsandboxed jobs,
        # and bwrap's pid 1: the outer bwrap exits without reaping it.
        _prctl(PR_SET_CHILD_SUBREAPER, 1)
        self._write_handle()
        self.started_at = time.time()
        self.t0 = time.monotonic()
        if self.spec.get("steps"):
            return self._run_steps(self.spec["steps"])
        tries = 1
        while True:
            self.last_try = tries == SANDBOX_TRIES
            result = self._run_once()
            if not self._tries_again(result):
                return result
            # bubblewrap copies the host's mounts; one that went away meanwhile (a container's, another
            # sandbox's) fails the copy. Nothing of the job ran: start it again.
            self._log("the host's mounts changed while the sandbox was set up; starting it again")
            if self.spec.get("retry_argv"):  # without copying the mounts below the hidden folders
                self.spec["argv"] = self.spec["retry_argv"]
            self._reset()
            time.sleep(0.05 * 2**tries)  # a container engine busy mounting settles within a second or so
            tries += 1

    def _tries_again(self, result: dict[str, Any]) -> bool:
        """Whether this failed start is followed by another (then nothing of it is recorded or told)."""
        return not self.last_try and self.sandboxed and self.reason is None and _mounts_changed(result)

    def _reset(self) -> None:
        """Forget a sandbox that failed to start, before starting again."""
        self.main_pid = self.main_status = self.sandbox_init = None
        if self.job_pidfd is not None:
            os.close(self.job_pidfd)
        self.job_pidfd = None
        self.outer_held = False
        self.hold_pending = self.sandboxed
        self.peak_bytes = 0
        self.started_at = time.time()
        self.t0 = time.monotonic()

    def _run_once(self) -> dict[str, Any]:
        log_start = os.fstat(self.log_fd).st_size
        pid = self._start()
        if isinstance(pid, str):
            self._log(pid)
            return self._finish("start_failed", None, pid)
        self.main_pid = pid
        self._notify_ready()
        self._follow(self.t0 + self.timeout_s if self.timeout_s is not None else None)

        if self.sandboxed and not self.outer_held:
            # The job was over before we could hold the outer bwrap (see _hold_sandbox), which exits as
            # soon as pid 1 reports the status, without reaping it. Pid 1, now our child, then kills
            # what the job left in the namespace and exits: let it, rather than count it as a leftover.
            deadline = time.monotonic() + 2.0
            while self._tree() and time.monotonic() < deadline:
                self._wait(0.005)
                self._reap()
        leftovers = self._kill_tree()
        self._mark()
        if self.job_pidfd is not None:
            os.close(self.job_pidfd)
        if self.container is not None:
            state = self._engine("inspect")
            self._sample_container()  # the last word of its parent group, if it has one
            result = self._container_result(state, log_start)  # on disk now: the runner goes on...
            self._remove_container()  # ...while the container and its groups are removed
            return result
        # (No status only if _kill_tree gave up on an unkillable process.)
        code = -signal.SIGKILL if self.main_status is None else os.waitstatus_to_exitcode(self.main_status)
        if leftovers and self.reason is None:
            self._log(f"killed {leftovers} process(es) the job left running")
        return self._result(code, log_start)

    def _follow(self, deadline: float | None) -> None:
        """Wait for the job's main process to end, enforcing the deadline, the memory limit and a cancel."""
        kill_at: float | None = None  # end of the grace period after SIGTERM
        next_sample = time.monotonic() + 0.02  # a job that is over by then is not worth a scan of /proc
        while True:
            self._reap()
            if self._job_exited():
                break
            now = time.monotonic()
            if self.hold_pending and now >= next_sample:
                self._hold_sandbox()
            if self.reason is None and (self.cancel_requested or (deadline is not None and now >= deadline)):
                if self.cancel_requested:
                    self.reason, why = "cancelled", "cancel requested"
                else:
                    self.reason, why = "timeout", f"time limit of {self.timeout_s:g} s exceeded"
                self._log(f"{why}; sending SIGTERM (SIGKILL in {self.grace_s:g} s)")
                if self.container is not None:  # the engine does TERM, grace, KILL inside the container
                    self._engine("stop", wait=False)
                    kill_at = now + self.grace_s + 10.0
                else:
                    self._signal_job(signal.SIGTERM)
                    kill_at = now + self.grace_s
            if kill_at is not None and now >= kill_at:
                self._log(f"job still running {self.grace_s:g} s after SIGTERM; sending SIGKILL")
                if self.container is not None:
                    self._engine("kill")
                self._kill_tree()
                continue
            if now >= next_sample:
                busy = self.memory_mb is not None or self.container is not None
                next_sample = now + (SAMPLE_S if busy else SAMPLE_IDLE_S)
                total = self._sample_memory()
                if self.memory_mb is not None and total > self.memory_mb * 2**20 and self.reason is None:
                    self.reason = "out_of_memory"
                    self.oom_usage_mb = total / 2**20
                    self._log(f"{self._oom_message()}; killing the job")
                    self._kill_tree()
                    continue
            self._mark()
            wake = [next_sample]
            if deadline is not None and self.reason is None:
                wake.append(deadline)
            if kill_at is not None:
                wake.append(kill_at)
            self._wait(min(wake) - now)

    # --- a task: containers one after the other ---------------------------------------------------

    def _run_steps(self, steps: list[dict[str, Any]]) -> dict[str, Any]:
        """Run each step's container in turn, within one time limit; stop after a step that fails (unless
        it may) and on a cancel, timeout, memory kill or missing image. Each step's exit code, times and
        stretch of the log go into the result."""
        deadline = self.t0 + self.timeout_s if self.timeout_s is not None else None
        done: list[dict[str, Any]] = []
        cpu_s = 0.0
        end: tuple[str, int | None, str] = ("exited", 0, "exited with code 0")
        for index, step in enumerate(steps):
            if self.cancel_requested or (deadline is not None and time.monotonic() >= deadline):
                self.reason = "cancelled" if self.cancel_requested else "timeout"
                end = self._container_end("", 0)
                break
            self.container, self.main_pid, self.main_status = step["container"], None, None
            self.container_pid, self.cgroup_files, self.container_cpu_s = 0, None, 0.0
            self.spec["program"], self.spec["image"] = step.get("program") or "?", step.get("image") or "?"
            self._log(f"executor {index + 1} of {len(steps)}: {step.get('shown', '')}")
            oom_file = os.path.join(self.spec["cwd"], "oom")  # Podman's word of a step's memory kill
            if os.path.lexists(oom_file):  # (see _container_end), left by the step before
                os.unlink(oom_file)
            log_start = os.fstat(self.log_fd).st_size
            record: dict[str, Any] = {"started_at": time.time(), "log_start": log_start}
            pid = self._start_step(step)
            if isinstance(pid, str):
                self._log(pid)
                self._notify_ready()
                record |= {"exit_code": None, "finished_at": time.time(), "log_end": log_start}
                done.append(record)
                end = ("start_failed", None, pid)
                break
            self.main_pid = pid
            self._notify_ready()
            self._follow(deadline)
            self._kill_tree()
            state = self._engine("inspect")
            self._sample_container()
            cpu_s += self.container_cpu_s
            outcome, code, message = self._container_end(state, log_start, step=True)
            # Removed here, not by a child of ours: the next step's end kills whatever is left in our tree.
            self._engine("remove")
            _remove_groups(_parent_cgroup_dirs(step["container"].get("cgroup_parent")))
            record |= {
                "exit_code": code,
                "finished_at": time.time(),
                "log_end": os.fstat(self.log_fd).st_size,
            }
            done.append(record)
            if outcome != "exited":
                end = (outcome, code, message)
                break
            if code != 0 and not step.get("ignore_error"):
                end = (outcome, code, f"executor {index + 1} {message}")
                break
            if code != 0:
                self._log(f"executor {index + 1} {message}; its errors are ignored")
        self.container_cpu_s = cpu_s
        return self._finish(*end, steps=done)

    def _start_step(self, step: dict[str, Any]) -> int | str:
        """Start one step's engine client, its standard streams in files of the task's folders when it
        names them: its pid, or why it could not start."""
        opened: dict[int, int] = {}
        try:
            owner = step.get("owner")
            for target, name, flags in (
                (0, "stdin", os.O_RDONLY),
                (1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
                (2, "stderr", os.O_WRONLY | os.O_CREAT | os.O_TRUNC),
            ):
                rel = step.get(name)
                if rel:
                    opened[target] = open_below(step["root"], rel, flags, owner)
            return self._spawn_client(step["argv"], opened)
        except OSError as exc:
            what = exc.filename or step["argv"][0]
            return f"executor could not be started: {what}: {exc.strerror or exc}"
        except ValueError as exc:
            return f"executor could not be started: {exc}"
        finally:
            for fd in opened.values():
                os.close(fd)

    def _oom_message(self) -> str:
        return f"memory limit of {self.memory_mb} MB exceeded (using {self.oom_usage_mb:.0f} MB)"

    def _result(self, code: int, log_start: int) -> dict[str, Any]:
        if self.reason == "timeout":
            return self._finish("timeout", None, f"time limit of {self.timeout_s:g} s exceeded")
        if self.reason == "out_of_memory":
            return self._finish("out_of_memory", None, self._oom_message())
        if self.reason == "cancelled":
            return self._finish("cancelled", None, "cancelled")
        if self.sandboxed and code in (1, 126, 127):
            # bwrap exits with 1 and a "bwrap: ..." line when it fails before the command runs (e.g.
            # execvp: command not found), setpriv with 126 or 127 and a "setpriv: ..." line. Nothing of the
            # job can precede that line in the log.
            first = os.pread(self.log_fd, 4096, log_start).split(b"\n", 1)[0].decode(errors="replace")
            failure = _bwrap_start_error(first)
            if failure is not None:
                self._log(failure)
                return self._finish("start_failed", None, failure)
        msg = f"exited with code {code}" if code >= 0 else f"killed by {_signal_name(-code)}"
        return self._finish("exited", code, msg)

    def _finish(
        self, outcome: str, code: int | None, message: str, steps: list[dict[str, Any]] | None = None
    ) -> dict[str, Any]:
        wall = time.monotonic() - self.t0
        children = resource.getrusage(resource.RUSAGE_CHILDREN)  # every process of the job, all reaped
        peak = self.peak_bytes
        # Children's ru_maxrss has our own peak RSS as a floor (the exec'ing fork counts), so it says
        # something only above that; then it catches a short peak between two samples. (Not compared with
        # our ru_maxrss: that one includes the RSS of the server that started us, through its vfork.)
        if children.ru_maxrss * 1024 > _own_peak_rss():
            peak = max(peak, children.ru_maxrss * 1024)
        result: dict[str, Any] = {
            "version": SPEC_VERSION,
            "outcome": outcome,
            "exit_code": code,
            "wall_s": round(wall, 4),
            "cpu_s": round(children.ru_utime + children.ru_stime + self.container_cpu_s, 4),
            "peak_memory_mb": round(peak / 2**20, 2),
            "message": message,
            "started_at": self.started_at,
            "finished_at": self.started_at + wall,
            "job_pid": self.main_pid,
        }
        if self.image_id is not None:
            result["image"] = self.image_id
        if steps is not None:
            result["steps"] = steps
        if not self._tries_again(result):  # a start that is tried again is no result yet
            self._write_status(result)
            self._notify_ready()
        return result

    def _notify_ready(self) -> None:
        """Tell launch() that the job started (or that its start failure is recorded)."""
        fd = self.spec.get("ready_fd")
        if fd is not None:
            self.spec["ready_fd"] = None
            try:
                os.write(fd, b"ok\n")
            except OSError:
                pass  # launch() gave up waiting or the server died: nobody to tell
            finally:
                os.close(fd)


def main(argv: list[str], fds: dict[str, int] | None = None) -> int:
    """Supervise the job of the spec file ``argv[1]``; ``fds``: the ready and lock descriptors when they are
    not the numbers the spec names (a supervisor forked by the launcher received its own)."""
    if len(argv) != 2:
        print("usage: supervise.py SPEC.json | supervise.py --launcher FD", file=sys.stderr)
        return 2
    with open(argv[1], "rb") as f:
        spec = json.load(f)
    os.unlink(argv[1])  # it holds the job's environment; nothing needs it any more
    if spec.get("version") != SPEC_VERSION:
        print(f"supervise.py: unsupported spec version {spec.get('version')}", file=sys.stderr)
        return 2
    spec.update(fds or {})
    for name in ("ready_fd", "lock_fd"):
        if spec.get(name) is not None:
            os.set_inheritable(spec[name], False)  # not for the job
    # The lock fd stays open for our whole life: the attempt's lock is held for as long as we run, and a
    # restarted server that can take it knows we are gone.
    Supervisor(spec).run()
    # The result is on disk: exit at once, the watcher is waiting for our exit (no interpreter teardown).
    os._exit(0)


# --- the warm launcher --------------------------------------------------------------------------------
#
# Starting a supervisor as a new interpreter costs some 15 ms of CPU (the interpreter, then this module's
# imports); a job that runs for milliseconds costs little more than that. So a server starts one launcher
# (``supervise.py --launcher FD``), which has all of this imported, and asks it for each job: the launcher
# forks, and the child runs main() as a supervisor started afresh would. A request is one packet on a
# SOCK_SEQPACKET socket: the spec file's path, with the job's ready, lock and log descriptors attached
# (SCM_RIGHTS); the answer is "<pid> <start time in clock ticks>", read while the child cannot have been
# reaped yet, so that the pair names it and no later process. The launcher exits when the server's end of
# the socket closes (also when the server dies); the supervisors it forked run on, in sessions of their own.

LAUNCH_FDS = ("ready_fd", "lock_fd", "log_fd")


def launcher(sock_fd: int) -> int:
    import socket

    sock = socket.socket(fileno=sock_fd)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C is the server's to handle
    signal.signal(signal.SIGCHLD, _reap)  # supervisors that ended are not left as zombies
    while True:
        try:
            message, fds, _, _ = socket.recv_fds(sock, 4096, len(LAUNCH_FDS))
        except OSError:
            return 0
        if not message:
            return 0  # the server is gone
        if len(fds) != len(LAUNCH_FDS):
            for fd in fds:
                os.close(fd)
            sock.send(b"error: expected the ready, lock and log descriptors")
            continue
        # No reaping until the child's start time is read: a reaped pid could be someone else's by then.
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGCHLD})
        try:
            pid = os.fork()
            if pid == 0:
                _launched(sock, message.decode(), dict(zip(LAUNCH_FDS, fds, strict=True)))
            info = read_stat(pid)
            answer = f"{pid} {info.starttime if info is not None else 0}"
        except OSError as exc:
            answer = f"error: {exc}"
        finally:
            for fd in fds:
                os.close(fd)
            signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGCHLD})
        sock.send(answer.encode())


def _reap(signum: int, frame: object) -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _launched(sock: Any, spec_path: str, fds: dict[str, int]) -> None:
    """In the launcher's child: become a supervisor as one started on its own would be, and never return."""
    code = 1
    try:
        sock.close()
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        signal.pthread_sigmask(signal.SIG_SETMASK, set())
        os.setsid()  # not in the launcher's session: a supervisor outlives it and the server
        log_fd = fds.pop("log_fd")
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log_fd, 1)  # our own problems (a traceback) go to the job's log
        os.dup2(log_fd, 2)
        os.close(null)
        os.close(log_fd)
        code = main(["supervise.py", spec_path], fds)
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stderr.flush()
        os._exit(code)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--launcher":
        sys.exit(launcher(int(sys.argv[2])))
    sys.exit(main(sys.argv))
