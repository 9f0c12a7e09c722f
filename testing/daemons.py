"""What the real servers of the tests and benchmarks (:mod:`testing.seaweed`, :mod:`testing.slurm`, ``labcloud
serve``) share: starting on free ports that another process may grab first, in an environment without the
caller's ``LABCLOUD_*`` settings, and finding the processes left behind once they are stopped."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class PortTaken(Exception):
    """A port picked as free was taken before the daemon bound it: try again with other ports."""


def start_retrying(
    attempts: int,
    prepare: Callable[[int], T],
    launch: Callable[[T], Any],
    stop: Callable[[T], None],
    unavailable: Callable[[str], Exception],
    log_tail: Callable[[T], str],
) -> T:
    """``prepare(attempt)`` then ``launch``; on :class:`PortTaken` stop and try again, up to ``attempts``."""
    for attempt in range(1, attempts + 1):
        started = prepare(attempt)
        try:
            launch(started)
            return started
        except PortTaken:
            stop(started)
            if attempt == attempts:
                raise unavailable(f"ports kept being taken:\n{log_tail(started)}") from None
        except BaseException:
            stop(started)
            raise
    raise AssertionError("unreachable")


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports free on 127.0.0.1 right now, all held open until every one is picked."""
    held: list[socket.socket] = []
    try:
        while len(held) < count:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            held.append(s)
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def free_port() -> int:
    """One TCP port free on 127.0.0.1 right now."""
    (port,) = free_ports(1)
    return port


def clean_env() -> dict[str, str]:
    """This process's environment without ``LABCLOUD_*``: a child gets only the settings it is given."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LABCLOUD_")}


def run_client(
    command: list[str], env: dict[str, str], cwd: Path | None, check: bool, timeout: float
) -> subprocess.CompletedProcess[str]:
    """A daemon's client command, output captured as text, no stdin; with ``check`` a non-zero exit raises
    ``CalledProcessError`` (with the command's stderr and stdout attached as a note)."""
    try:
        return subprocess.run(
            command,
            env=env,
            cwd=cwd,
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.CalledProcessError as exc:
        exc.add_note(f"stderr: {(exc.stderr or '').strip()}\nstdout: {(exc.stdout or '').strip()}")
        raise


def alive(pid: int) -> bool:
    """Running: not gone and not a zombie (a re-parented zombie still answers ``kill -0``)."""
    if pid <= 0:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def holders(root: Path) -> list[int]:
    """Processes (other than this one) whose working directory or an open file is under ``root``."""
    prefix = str(root) + "/"
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            links = [os.readlink(entry / "cwd")]
            links += [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:
            continue
        if any(link == str(root) or link.startswith(prefix) for link in links):
            found.append(int(entry.name))
    return found
