"""Sandboxing of job commands with bubblewrap (``bwrap``), and which host user a job runs as.

A sandboxed job sees the host file system read-only, gets a private ``/tmp``, ``/dev`` and ``/proc``, its own
pid/ipc/uts/cgroup (and by default network) namespaces, and no capabilities. Its work folder is the only
writable host path; the data dir, config and secrets are covered so the job cannot read them, and so are the
host's private folders (sockets under ``/run``, homes, state under ``/var/lib``, ``/tmp``...).

A job never runs as root. When labcloud itself runs as root, bwrap sets the sandbox up with root's rights
(so it can bind folders only root may enter, such as an interpreter under ``/root``) and the job's command is
started through ``setpriv`` as an unprivileged *host* user (``nobody`` by default): the kernel checks the
job's every file access as that user's, whatever the sandbox shows. A user namespace that only renames root
inside the sandbox would not do that. When labcloud runs as an ordinary user, jobs run as that user in an
unprivileged sandbox. With the sandbox off, a job run by root still runs as that host user (the supervisor
drops to it before the command starts), and must be able to reach its folder by its real path
(:func:`unreachable`).
"""

from __future__ import annotations

import functools
import grp
import importlib.util
import os
import pwd
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from labcloud.execution.host_view import WHOLE_ROOT, host_view, mounts_below

__all__ = [
    "HOST_PRIVATE",
    "JobUser",
    "SandboxMode",
    "SandboxPolicy",
    "SandboxUnavailable",
    "Sandboxing",
    "bwrap_path",
    "resolve_job_user",
    "resolve_sandboxing",
    "sandbox_problem",
    "unreachable",
    "wrap_command",
    "wrap_commands",
]

SandboxMode = Literal["auto", "required", "off"]

# Host folders no job may look into: service sockets (PostgreSQL's, the container engines'), homes, service
# state, logs and temporary files of other programs. /var/run is a link to /run on every current system.
HOST_PRIVATE: tuple[Path, ...] = tuple(
    Path(p)
    for p in (
        "/run",
        "/var/run",
        "/root",
        "/home",
        "/var/lib",
        "/var/log",
        "/var/spool",
        "/var/mail",
        "/var/tmp",
        "/tmp",
        "/dev/shm",
    )
)


class SandboxUnavailable(RuntimeError):
    """bwrap is not installed or not permitted on this machine."""


@dataclass(frozen=True)
class JobUser:
    """The unprivileged host account jobs run as when labcloud runs as root."""

    uid: int
    gid: int
    name: str

    def __str__(self) -> str:
        return f"{self.name} ({self.uid}:{self.gid})"


@dataclass(frozen=True)
class SandboxPolicy:
    """What a sandboxed job may see and touch.

    ``writable``: folders bound read-write (the job's work folder); everything else of the host is read-only.
    ``hidden``: folders covered by an empty tmpfs, files by /dev/null, which bwrap mounts ``nodev`` so they
    cannot even be opened (data dir, config files, secrets); :data:`HOST_PRIVATE` always is. Missing paths are
    skipped. The most specific path wins, so a writable job folder inside a hidden data dir stays writable,
    and a hidden path inside a writable folder stays hidden.
    ``network``: keep the host network; otherwise the job gets an empty network namespace (loopback only).
    ``readonly``: host folders shown read-only again even where a hidden path would cover them. The Python
    installation labcloud runs from (the jobs' ``python``) and the installed labcloud packages always are.
    ``user``: the host user the command runs as (labcloud running as root); None: labcloud's own user.
    """

    writable: tuple[Path, ...]
    hidden: tuple[Path, ...]
    network: bool = False
    readonly: tuple[Path, ...] = ()
    user: JobUser | None = None


def _real(p: Path | str) -> Path:
    # bwrap mounts on the path it is given; resolve symlinks so "/var/run/x" and "/run/x" are the same.
    return Path(os.path.realpath(p))


@functools.cache
def software_paths() -> tuple[Path, ...]:
    """This interpreter's installation and the labcloud packages: a job's ``python`` must work even when
    they sit in a hidden folder (a scratch clone under /tmp, a venv in a home, pyenv under /root)."""
    roots = {Path(sys.prefix), Path(sys.base_prefix), Path(sys.exec_prefix)}
    for name in ("labcloud", "labcloud_demo"):
        spec = importlib.util.find_spec(name)
        for location in (spec.submodule_search_locations or []) if spec else []:
            roots.add(Path(location).resolve().parent)
    return tuple(sorted(roots))


HIDE, BIND_RW, BIND_RO = 0, 1, 2
SHM = Path("/dev/shm")


def _build(
    bwrap: str, argv: list[str], policy: SandboxPolicy, cwd: Path, split: bool | None = None
) -> list[str]:
    """The bwrap command line for ``argv`` (no availability check). ``split``: show the host folder by
    folder (:func:`~labcloud.execution.host_view.host_view`); False: bind its root whole, which copies
    every mount of the host; None: split only when something is mounted below a hidden folder now (whole
    is faster: a sandbox sets up in about half the time)."""
    return _commands(bwrap, argv, policy, cwd, split)[0]


def _commands(
    bwrap: str, argv: list[str], policy: SandboxPolicy, cwd: Path, split: bool | None
) -> tuple[list[str], list[str] | None]:
    """:func:`_build`'s command line, and the one that shows the host folder by folder when that one binds
    the root whole (else None)."""
    # Mount operations ordered parent-before-child; at equal paths "writable" comes after "hidden" and
    # therefore wins; "readonly" re-exposes a host folder inside a hidden one.
    ops: dict[Path, int] = {}
    for h in (*HOST_PRIVATE, *policy.hidden):
        rp = h if h == SHM else _real(h)  # the sandbox has a /dev of its own: its /dev/shm, not the host's
        if rp == Path("/"):
            raise ValueError("cannot hide the root directory")
        if rp.exists():
            ops.setdefault(rp, HIDE)
    for r in (*policy.readonly, *software_paths()):
        rp = _real(r)
        if rp.is_dir():
            ops.setdefault(rp, BIND_RO)
    for w in policy.writable:
        rp = _real(w)
        if not rp.is_dir():
            raise ValueError(f"writable sandbox path is not a directory: {w}")
        ops[rp] = BIND_RW

    def nearest_mounted(p: Path) -> Path | None:
        for parent in p.parents:
            if parent in ops:
                return parent
        return None

    # The host's folders, read-only, except the hidden ones, which are never copied in (see host_view).
    cut = {p for p, kind in ops.items() if kind == HIDE and p.is_dir() and nearest_mounted(p) is None}
    cut.discard(SHM)  # the sandbox's /dev is its own
    args: list[str] = []  # the mounts over the host's view
    for path, kind in sorted(ops.items(), key=lambda item: (len(item[0].parts), item[1], str(item[0]))):
        above = nearest_mounted(path)
        in_hidden = above is not None and ops[above] == HIDE
        if kind == HIDE:
            if in_hidden:
                continue  # already invisible (e.g. a secret file inside the hidden data dir)
            if path.is_dir() or not path.exists():
                args += ["--perms", "1777" if path in (Path("/tmp"), SHM) else "0755"]
                args += ["--tmpfs", str(path)]
            else:
                args += ["--ro-bind", "/dev/null", str(path)]
            continue
        if in_hidden:
            # The folders leading from the empty tmpfs to the bound one: bwrap would create them 0700,
            # which an unprivileged job user could not enter.
            assert above is not None
            for step in reversed(path.parents):
                if len(step.parts) > len(above.parts) and step != path:
                    args += ["--perms", "0755", "--dir", str(step)]
        args += ["--bind" if kind == BIND_RW else "--ro-bind", str(path), str(path)]

    mounts, args = args, []
    args += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
    if not policy.network:
        args.append("--unshare-net")
    # Without this a job could remount "/" read-write or unmount the tmpfs over the data dir. With a job
    # user, setpriv needs these three to drop to it, and drops them with every other capability.
    args += ["--cap-drop", "ALL"]
    if policy.user is not None:
        args += ["--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID", "--cap-add", "CAP_SETPCAP"]
    args += [
        "--new-session",  # no TIOCSTI injection into a terminal
        "--die-with-parent",  # the supervisor is the parent: if it dies, the whole sandbox dies
        "--chdir",
        str(_real(cwd)),
        "--",
    ]
    if policy.user is not None:
        args += _drop_to(policy.user)
    args += argv

    def command(split: bool) -> list[str]:
        if not split:
            return [bwrap, *WHOLE_ROOT, "--dev", "/dev", "--proc", "/proc", *mounts, *args]
        # the sandbox's own root holds the mount points of the host's folders: read-only once they are made
        view = host_view(cut)
        return [bwrap, *view, "--dev", "/dev", "--proc", "/proc", *mounts, "--remount-ro", "/", *args]

    if split is None:
        split = mounts_below(cut)
    return command(split), None if split else command(True)


def _drop_to(user: JobUser) -> list[str]:
    setpriv = shutil.which("setpriv") or "/usr/bin/setpriv"
    return [
        setpriv,
        f"--reuid={user.uid}",
        f"--regid={user.gid}",
        "--clear-groups",
        "--inh-caps=-all",
        "--bounding-set=-all",
        "--",
    ]


@functools.cache
def _probe(user: JobUser | None) -> tuple[str | None, str | None]:
    """(bwrap path, None) if a sandbox with our flags really starts here, else (None, reason)."""
    exe = shutil.which("bwrap")
    if exe is None:
        return None, "bwrap is not installed"
    if user is not None and shutil.which("setpriv") is None:
        return None, "setpriv (util-linux) is not installed"
    true = shutil.which("true") or "/bin/true"
    policy = SandboxPolicy(writable=(), hidden=(), user=user)
    for split in (False, True):  # both ways of showing the host must work here
        cmd = _build(exe, [true], policy, Path("/"), split)
        try:
            proc = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, timeout=20, env={})
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"bwrap self-test failed: {exc}"
        if proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip() or f"exit status {proc.returncode}"
            return None, f"bwrap self-test failed: {err}"
    return exe, None


def bwrap_path(user: JobUser | None = None) -> str | None:
    """Path of a bwrap that works here (checked once per process by starting a sandbox), else None."""
    return _probe(user)[0]


def sandbox_problem(user: JobUser | None = None) -> str | None:
    """Why sandboxing is unavailable (for logs and readiness checks), or None when it works."""
    return _probe(user)[1]


def wrap_command(argv: list[str], policy: SandboxPolicy, cwd: Path) -> list[str]:
    """Return the bwrap argv that runs ``argv`` in ``cwd`` under ``policy``.

    Raises SandboxUnavailable if bwrap does not work here: never silently run unsandboxed.
    """
    return wrap_commands(argv, policy, cwd)[0]


def wrap_commands(argv: list[str], policy: SandboxPolicy, cwd: Path) -> tuple[list[str], list[str] | None]:
    """:func:`wrap_command`'s argv, and the one to start again with when that sandbox failed over a mount of
    the host that changed (None when the first already shows the host folder by folder): a mount may appear
    below a hidden folder between this look at the mount table and the sandbox's start."""
    if not argv:
        raise ValueError("empty command")
    exe = bwrap_path(policy.user)
    if exe is None:
        raise SandboxUnavailable(sandbox_problem(policy.user) or "bwrap unavailable")
    return _commands(exe, argv, policy, cwd, None)


# --- which user, whether a sandbox: decided once for the server, a worker or a runner --------------------


def resolve_job_user(name: str) -> JobUser | None:
    """The account jobs run as: ``name`` (a user name, or ``uid[:gid]``) when this process runs as root,
    else None (jobs run as this process's own, unprivileged user). Raises ValueError for an unknown user
    or for root itself."""
    if os.geteuid() != 0:
        return None
    spec = (name or "nobody").strip()
    if spec.replace(":", "").isdigit():
        uid_text, _, gid_text = spec.partition(":")
        uid = int(uid_text)
        try:
            entry: pwd.struct_passwd | None = pwd.getpwuid(uid)
        except KeyError:
            entry = None
        gid = int(gid_text) if gid_text else (entry.pw_gid if entry else uid)
        user = JobUser(uid, gid, entry.pw_name if entry else str(uid))
    else:
        try:
            entry = pwd.getpwnam(spec)
        except KeyError:
            raise ValueError(f"the job user {spec!r} does not exist on this machine") from None
        user = JobUser(entry.pw_uid, entry.pw_gid, entry.pw_name)
    if user.uid == 0 or user.gid == 0:
        raise ValueError("jobs must not run as root: set job_user to an unprivileged account")
    return user


def group_name(gid: int) -> str:
    try:
        return grp.getgrgid(gid).gr_name
    except KeyError:
        return str(gid)


@dataclass(frozen=True)
class Sandboxing:
    """How jobs of one server, worker or runner are isolated: decided once, at its start."""

    enabled: bool
    user: JobUser | None  # the host user jobs run as (when labcloud runs as root)
    problem: str | None  # why there is no sandbox (None when enabled, or off on purpose)
    refuse: bool  # no sandbox where one is needed: jobs are not run at all
    # Why commands may not run here at all (``refuse``), in words for the job's log; else None.
    refusal: str | None = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "refusal", (self.problem or "no sandbox") if self.refuse else None)

    def describe(self) -> str:
        who = f"as {self.user}" if self.user else f"as uid {os.geteuid()}"
        if self.enabled:
            return f"sandboxed (bubblewrap), {who}"
        if self.refuse:
            return f"REFUSED: {self.problem}"
        return f"WITHOUT a sandbox, {who}" + (f" ({self.problem})" if self.problem else "")


def resolve_sandboxing(mode: SandboxMode, job_user: str = "nobody") -> Sandboxing:
    """``required``: bubblewrap or nothing runs; ``auto``: bubblewrap when it works, and when it does not,
    jobs still run unsandboxed as an ordinary user, but never as root; ``off``: no sandbox (for machines
    where nothing else needs protecting), jobs run as this process's user or, when that is root, as the job
    user all the same (never as root)."""
    user = resolve_job_user(job_user)
    if mode == "off":
        return Sandboxing(False, user, "the sandbox is off (sandbox = off)", refuse=False)
    problem = sandbox_problem(user)
    if problem is None:
        return Sandboxing(True, user, None, refuse=False)
    if mode == "required":
        return Sandboxing(False, user, f"the sandbox is required but does not work: {problem}", refuse=True)
    if os.geteuid() == 0:
        return Sandboxing(
            False,
            user,
            f"bubblewrap does not work ({problem}) and jobs never run as root without a sandbox; install "
            "Debian's bubblewrap, or run labcloud as an ordinary user",
            refuse=True,
        )
    return Sandboxing(False, None, problem, refuse=False)


def _may_search(info: os.stat_result, user: JobUser) -> bool:
    if info.st_uid == user.uid:
        return bool(info.st_mode & 0o100)
    if info.st_gid == user.gid:  # (the job runs with no supplementary groups)
        return bool(info.st_mode & 0o010)
    return bool(info.st_mode & 0o001)


def unreachable(folder: Path, user: JobUser) -> str | None:
    """Why ``user`` cannot reach ``folder`` by its path (a job run without a sandbox uses its folder's real
    path), or None when every folder on the way lets it through."""
    for step in (*reversed(Path(os.path.realpath(folder)).parents), Path(os.path.realpath(folder))):
        try:
            info = os.stat(step)
        except OSError as exc:
            return f"{step}: {exc.strerror}"
        if not _may_search(info, user):
            owner = f"{_user_name(info.st_uid)}:{group_name(info.st_gid)}"
            return (
                f"the sandbox is off (sandbox = off) and jobs run as {user}, who may not enter {step} "
                f"(mode {info.st_mode & 0o7777:04o}, owner {owner}) on the way to the job's folder: let it "
                "through (search permission only), choose a work folder it can reach, or turn the sandbox on"
            )
    return None


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
