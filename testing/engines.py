"""Real container engines for the tests: a private Docker daemon, Podman on a private storage, and the busybox
image ``labcloud/busybox:1`` in either.

``with DockerDaemon() as docker: docker.cli.run("run", "--rm", "--pull=never", IMAGE, "true")`` starts a
``dockerd`` of its own: data root, exec root (and the containerd it starts there), socket, pid file and log
in a short folder under ``/tmp`` (Unix socket paths are limited to 107 bytes), no iptables rules and no
bridge (containers get a loopback only), default ulimits this machine's hard limits allow. Leaving the block
stops it, with whatever it left running, unmounts what it mounted and deletes the folder.

``with private_podman() as podman: ...`` is Podman with its own root, runroot, tmpdir and network
configuration in such a folder (``podman_options(folder)`` are its global options): runc (Podman's default
crun fails on this host's cgroup layout), cgroupfs (there is no systemd) and an events file (no journald).
Podman has no daemon; leaving the block removes its containers and the folder.

Each gives an :class:`EngineCLI`: the command line to call the engine with (``argv``: the CLI and its global
options), the variables to add to the environment (``env``) and the options that every ``run`` or
``create`` needs on this machine (``run_args``: Podman's ulimits; Docker's daemon has them as defaults).
``import_image(cli)`` imports ``labcloud/busybox:1`` with scripts/build-image.sh, which builds the root file
system's tar once and caches it under ``~/.cache/labcloud/images/``; the import itself takes some 0.2-0.5 s.

What each engine says about a container killed for its memory limit: Docker's ``inspect`` has
``State.OOMKilled`` true. Podman 4 (Debian 12's 4.3) does not: conmon notices the kill and creates a file
``oom`` in its working directory, which is the working directory of the ``podman run`` or ``podman start``
that started it, while Podman looks for it in the container's bundle (fixed in Podman 5, which passes conmon
a directory of its own). The exit status is 137 in both.

Timings on a busy 2-CPU machine: ``dockerd`` answers 0.3-0.5 s after its start and stops in 1-1.5 s (running
containers included); importing the image takes 0.2-0.7 s, ``run --rm ... true`` 0.3-0.6 s in either engine.

Needs root and the Debian packages ``docker.io`` (dockerd, containerd, runc), ``podman`` (with conmon) and
``busybox-static`` (scripts/ensure-system.sh --postgres installs them all).
"""

from __future__ import annotations

import contextlib
import os
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from testing.daemons import alive, clean_env, holders, run_client

IMAGE = "labcloud/busybox:1"
BUILD_IMAGE = Path(__file__).resolve().parents[1] / "scripts" / "build-image.sh"
START_DEADLINE_S = 30.0
STOP_GRACE_S = 15.0
POLL_S = 0.05
INSTALL_HINT = "install the Debian packages docker.io, podman and runc: scripts/ensure-system.sh --postgres"
# The ulimits of a container: the engines' defaults exceed this machine's hard limits (the container then
# fails to start), so these, or the hard limits where those are lower.
WANTED_LIMITS = {"nofile": (resource.RLIMIT_NOFILE, 20000), "nproc": (resource.RLIMIT_NPROC, 32768)}


class EngineUnavailable(RuntimeError):
    """An engine's binary is missing, its daemon did not come up, or the image could not be imported."""


@dataclass(frozen=True)
class EngineCLI:
    """How to call one container engine: ``[*argv, *args]`` with ``env`` added to the environment."""

    kind: str  # "docker" or "podman"
    argv: list[str]  # the CLI and its global options: ["docker", "-H", "unix:///tmp/lc-dk-.../docker.sock"]
    env: dict[str, str]  # the variables to add to the caller's environment
    run_args: list[str] = field(default_factory=list)  # options every ``run``/``create`` needs here

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def environ(self) -> dict[str, str]:
        """This process's environment with ``env`` added."""
        return {**os.environ, **self.env}

    def run(
        self, *args: str, check: bool = True, timeout: float = 60, cwd: Path | None = None
    ) -> subprocess.CompletedProcess[str]:
        """``engine ARGS...``, output captured as text; with ``check`` a non-zero exit raises
        ``CalledProcessError`` (with the command's stderr attached as a note)."""
        return run_client(self.command(*args), self.environ(), cwd, check, timeout)


def ulimits() -> list[str]:
    """``nofile=N:N`` and ``nproc=M:M``: the wanted limits, or the hard limits where those are lower."""
    limits = []
    for name, (which, wanted) in WANTED_LIMITS.items():
        hard = resource.getrlimit(which)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        limits.append(f"{name}={value}:{value}")
    return limits


def short_folder(prefix: str) -> Path:
    """A new folder directly under ``/tmp``: engines put Unix sockets deep below their folders."""
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def _require(*binaries: str) -> None:
    missing = [name for name in binaries if shutil.which(name) is None]
    if missing:
        raise EngineUnavailable(f"missing: {', '.join(missing)}; {INSTALL_HINT}")


# -- Docker --------------------------------------------------------------------------------------------


class DockerDaemon:
    """A private ``dockerd`` in a folder of its own (a new one under ``/tmp`` unless given); a context
    manager: started on entry, stopped and its folder deleted on exit. ``cli`` is how to call it."""

    def __init__(self, folder: Path | None = None) -> None:
        self._given = folder
        self.folder = folder or Path()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def socket(self) -> Path:
        return self.folder / "docker.sock"

    @property
    def log(self) -> Path:
        return self.folder / "dockerd.log"

    @property
    def cli(self) -> EngineCLI:
        # A CLI configuration of its own: the caller's ~/.docker (contexts, credential helpers) plays no part.
        return EngineCLI(
            kind="docker",
            argv=["docker", "-H", f"unix://{self.socket}"],
            env={"DOCKER_CONFIG": str(self.folder / "cli")},
        )

    def __enter__(self) -> DockerDaemon:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> DockerDaemon:
        """Start ``dockerd`` and wait until it answers; :class:`EngineUnavailable` (with the log's tail) if a
        binary is missing, or it exits or does not answer within 30 s."""
        _require("dockerd", "containerd", "containerd-shim-runc-v2", "runc", "docker")
        self.folder = self._given or short_folder("lc-dk-")
        self.folder.mkdir(parents=True, exist_ok=True)
        namespace = f"labcloud-{secrets.token_hex(4)}"  # its own, should it find a system containerd to use
        command = [
            "dockerd",
            "--data-root", str(self.folder / "data"),
            "--exec-root", str(self.folder / "exec"),
            "--host", f"unix://{self.socket}",
            "--pidfile", str(self.folder / "docker.pid"),
            "--containerd-namespace", namespace,
            "--containerd-plugins-namespace", f"{namespace}-plugins",
            "--iptables=false",
            "--ip6tables=false",
            "--bridge=none",
            *(f"--default-ulimit={limit}" for limit in ulimits()),
        ]  # fmt: skip
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                command,
                env=clean_env(),
                cwd=self.folder,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the caller reaches it only through stop()
            )
        try:
            self._wait_answering()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_answering(self) -> None:
        assert self.process is not None
        deadline = time.monotonic() + START_DEADLINE_S
        while not self.answers():
            if self.process.poll() is not None:
                raise EngineUnavailable(f"dockerd exited with {self.process.returncode}:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                late = f"dockerd did not answer at {self.socket} within {START_DEADLINE_S:.0f} s"
                raise EngineUnavailable(f"{late}:\n{self.log_tail()}")
            time.sleep(POLL_S)

    def answers(self) -> bool:
        """Whether the daemon answers ``GET /_ping`` on its socket."""
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(2)
                s.connect(str(self.socket))
                s.sendall(b"GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n")
                return s.recv(64).split(b"\r\n", 1)[0].endswith(b" 200 OK")
        except OSError:
            return False

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            text = self.log.read_text(errors="replace").splitlines()[-lines:]
            if text:
                return "\n".join(text)
        return "(no log)"

    def stop(self) -> None:
        """Kill the running containers, stop ``dockerd`` (SIGTERM: it stops its containerd), SIGKILL what is
        left of it, unmount what it mounted and delete the folder. Never raises."""
        try:
            if self.process is not None and self.process.poll() is None:
                self._kill_containers()
                self.process.terminate()
                try:
                    self.process.wait(timeout=STOP_GRACE_S)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait(timeout=STOP_GRACE_S)
        except Exception:  # a cleanup: it must not hide the error that brought us here
            pass
        self.process = None
        if self.folder != Path():
            remove_folder(self.folder)

    def _kill_containers(self) -> None:
        """SIGKILL the running containers: stopping itself, dockerd gives each 10 s after a SIGTERM."""
        with contextlib.suppress(Exception):
            running = self.cli.run("ps", "--quiet", timeout=10).stdout.split()
            if running:
                self.cli.run("kill", *running, check=False, timeout=30)


# -- Podman --------------------------------------------------------------------------------------------


def podman_options(folder: Path) -> list[str]:
    """Podman's global options for a storage of its own under ``folder``: images, containers, state and
    network configuration all there, runc, cgroupfs, events in a file."""
    return [
        "--runtime", "runc",
        "--root", str(folder / "root"),
        "--runroot", str(folder / "run"),
        "--tmpdir", str(folder / "tmp"),
        "--network-config-dir", str(folder / "networks"),
        "--cgroup-manager", "cgroupfs",
        "--events-backend", "file",
    ]  # fmt: skip


def podman_cli(folder: Path) -> EngineCLI:
    """Podman on the storage under ``folder``."""
    return EngineCLI(
        kind="podman",
        argv=["podman", *podman_options(folder)],
        env={},
        run_args=[arg for limit in ulimits() for arg in ("--ulimit", limit)],
    )


@contextlib.contextmanager
def private_podman(folder: Path | None = None) -> Iterator[EngineCLI]:
    """Podman on a storage of its own (in a new folder under ``/tmp`` unless given); afterwards its
    containers are removed, and the folder with them."""
    _require("podman", "conmon", "runc")
    folder = folder or short_folder("lc-pm-")
    cli = podman_cli(folder)
    try:
        yield cli
    finally:
        with contextlib.suppress(Exception):
            cli.run("rm", "--all", "--force", "--time", "0", check=False, timeout=60)
        remove_folder(folder)


# -- the image -----------------------------------------------------------------------------------------


def import_image(cli: EngineCLI) -> str:
    """Import ``labcloud/busybox:1`` into the engine (nothing to do if it holds this very root file system);
    its image id. :class:`EngineUnavailable` with the script's output if that fails."""
    command = ["bash", str(BUILD_IMAGE), cli.kind, "--", *cli.argv]
    try:
        done = subprocess.run(
            command, env=cli.environ(), capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineUnavailable(f"{' '.join(command)} took more than {exc.timeout:.0f} s") from exc
    if done.returncode != 0:
        output = f"{done.stderr.strip()}\n{done.stdout.strip()}".strip()
        raise EngineUnavailable(f"{' '.join(command)} exited with {done.returncode}:\n{output}")
    return cli.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()


# -- cleaning up ---------------------------------------------------------------------------------------


def remove_folder(folder: Path) -> None:
    """SIGKILL every process that holds a file under ``folder`` or names it on its command line, unmount
    everything mounted under it, then delete it (unless something there stays mounted: deleting would
    reach through the mount). Never raises."""
    try:
        pids = set(holders(folder)) | set(_naming(folder))
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + STOP_GRACE_S
        while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(POLL_S)
        for mount in sorted(_mounts_under(folder), key=len, reverse=True):
            subprocess.run(["umount", "--lazy", mount], capture_output=True, timeout=30)
        if not _mounts_under(folder):
            shutil.rmtree(folder, ignore_errors=True)
    except Exception:  # a cleanup: it must not hide the error that brought us here
        pass


def _naming(folder: Path) -> list[int]:
    """Processes (other than this one) with ``folder`` or a path under it on their command line."""
    marker = str(folder)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        with contextlib.suppress(OSError):
            args = (entry / "cmdline").read_bytes().decode(errors="replace").split("\0")
            if any(arg.endswith(marker) or marker + "/" in arg for arg in args):
                found.append(int(entry.name))
    return found


def _mounts_under(folder: Path) -> list[str]:
    """The mount points under ``folder`` (or ``folder`` itself), from this process's mount table."""
    prefix = str(folder).rstrip("/")
    found = []
    with open("/proc/self/mountinfo") as table:
        for line in table:
            point = _unescape(line.split()[4])
            if point == prefix or point.startswith(prefix + "/"):
                found.append(point)
    return found


def _unescape(field_text: str) -> str:
    """A mountinfo field with its octal escapes (``\\040`` for a space...) decoded."""
    return field_text.encode().decode("unicode_escape") if "\\" in field_text else field_text
