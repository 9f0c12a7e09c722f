"""Sandboxing of job commands with bubblewrap (``bwrap``).

A sandboxed job sees the host file system read-only, gets a private ``/tmp``, ``/dev`` and ``/proc``,
its own pid/ipc/uts (and by default network) namespaces, and no capabilities. Its job folder is the only
writable host path; the data dir, config and secrets are covered so the job cannot read them.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "SandboxPolicy",
    "SandboxUnavailable",
    "bwrap_path",
    "sandbox_problem",
    "wrap_command",
]


class SandboxUnavailable(RuntimeError):
    """bwrap is not installed or not permitted on this machine."""


@dataclass(frozen=True)
class SandboxPolicy:
    """What a sandboxed job may see and touch.

    ``writable``: folders bound read-write (the job folder); everything else of the host is read-only.
    ``hidden``: folders covered by an empty tmpfs, files by /dev/null, which bwrap mounts ``nodev`` so
    they cannot even be opened (data dir, config files, secrets). Missing paths are skipped. The most
    specific path wins, so a writable job folder inside a hidden data dir stays writable, and a hidden
    path inside a writable folder stays hidden.
    ``network``: keep the host network; otherwise the job gets an empty network namespace (loopback only).
    ``readonly``: host folders shown read-only again even where a hidden path (such as the private /tmp)
    would cover them. The Python installation labcloud runs from (the jobs' ``python``) and the
    installed labcloud packages always are.
    """

    writable: tuple[Path, ...]
    hidden: tuple[Path, ...]
    network: bool = False
    readonly: tuple[Path, ...] = ()


def _real(p: Path | str) -> Path:
    # bwrap mounts on the path it is given; resolve symlinks so "/var/run/x" and "/run/x" are the same.
    return Path(os.path.realpath(p))


def software_paths() -> tuple[Path, ...]:
    """This interpreter's installation and the labcloud packages: a job's ``python`` must work even when
    they sit under /tmp (a scratch clone, a venv there), which jobs otherwise see as an empty folder."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    for name in ("labcloud", "labcloud_demo"):
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.add(Path(location).resolve().parent)
    return tuple(sorted(roots))


def _build(bwrap: str, argv: list[str], policy: SandboxPolicy, cwd: Path) -> list[str]:
    """The bwrap command line for ``argv`` (no availability check)."""
    args = [bwrap, "--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]

    # Mount operations ordered parent-before-child; at equal paths "writable" (1) comes after "hidden" (0)
    # and therefore wins; "readonly" (2) re-exposes a host folder inside a hidden one. /tmp is a hidden
    # path of every sandbox (a private, empty tmpfs).
    ops: dict[Path, int] = {Path("/tmp"): 0}
    for h in policy.hidden:
        rp = _real(h)
        if rp == Path("/"):
            raise ValueError("cannot hide the root directory")
        if rp.exists():
            ops.setdefault(rp, 0)
    for r in (*policy.readonly, *software_paths()):
        rp = _real(r)
        if rp.is_dir():
            ops.setdefault(rp, 2)
    for w in policy.writable:
        rp = _real(w)
        if not rp.is_dir():
            raise ValueError(f"writable sandbox path is not a directory: {w}")
        ops[rp] = 1

    def covered_by_hidden(p: Path) -> bool:
        # The nearest mounted ancestor decides what a path looks like inside the sandbox.
        for parent in p.parents:
            if parent in ops:
                return ops[parent] == 0
        return False

    for path, kind in sorted(ops.items(), key=lambda item: (len(item[0].parts), item[1], str(item[0]))):
        if kind == 1:
            args += ["--bind", str(path), str(path)]
        elif kind == 2:
            args += ["--ro-bind", str(path), str(path)]
        elif covered_by_hidden(path):
            continue  # already invisible (e.g. a secret file inside the hidden data dir)
        elif path.is_dir():
            args += ["--tmpfs", str(path)]
        else:
            args += ["--ro-bind", "/dev/null", str(path)]

    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts"]
    if not policy.network:
        args.append("--unshare-net")
    args += [
        # Without this a job run by root keeps all capabilities inside and can simply remount "/" rw
        # or unmount the tmpfs over the data dir.
        "--cap-drop",
        "ALL",
        "--new-session",  # no TIOCSTI injection into a terminal
        "--die-with-parent",  # the supervisor is the parent: if it dies, the whole sandbox dies
        "--chdir",
        str(_real(cwd)),
        "--",
        *argv,
    ]
    return args


@functools.cache
def _probe() -> tuple[str | None, str | None]:
    """(bwrap path, None) if a sandbox with our flags really starts here, else (None, reason)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None, "bwrap is not installed"
    true = shutil.which("true") or "/bin/true"
    cmd = _build(exe, [true], SandboxPolicy(writable=(), hidden=()), Path("/"))
    try:
        proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, env={})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap self-test failed: {exc}"
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        return None, f"bwrap self-test failed: {err}"
    return exe, None


def bwrap_path() -> str | None:
    """Path of a bwrap that works here (checked once per process by starting a sandbox), else None."""
    return _probe()[0]


def sandbox_problem() -> str | None:
    """Why sandboxing is unavailable (for logs and readiness checks), or None when it works."""
    return _probe()[1]


def wrap_command(argv: list[str], policy: SandboxPolicy, cwd: Path) -> list[str]:
    """Return the bwrap argv that runs ``argv`` in ``cwd`` under ``policy``.

    Raises SandboxUnavailable if bwrap does not work here: never silently run unsandboxed.
    """
    if not argv:
        raise ValueError("empty command")
    exe = bwrap_path()
    if exe is None:
        raise SandboxUnavailable(sandbox_problem() or "bwrap unavailable")
    return _build(exe, argv, policy, cwd)
