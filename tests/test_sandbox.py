"""The bubblewrap sandbox really isolates jobs. Needs bwrap: these tests fail (never skip) without it."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from labcloud.execution.host_view import mounts_below
from labcloud.execution.process import LaunchSpec, Limits, ProcessResult
from labcloud.execution.sandbox import (
    HOST_PRIVATE,
    JobUser,
    SandboxPolicy,
    bwrap_path,
    resolve_job_user,
    resolve_sandboxing,
    sandbox_problem,
    software_paths,
    unreachable,
    wrap_command,
    wrap_commands,
)
from labcloud.execution.watch import run

pytestmark = pytest.mark.sandbox

PY = sys.executable
JOB_USER = resolve_job_user("nobody")  # None unless the tests run as root (as they do in CI)


@pytest.fixture(autouse=True)
def require_bwrap() -> None:
    assert bwrap_path(JOB_USER) is not None, (
        f"bubblewrap is required for these tests: {sandbox_problem(JOB_USER)}"
    )


@dataclass
class Layout:
    """A fake labcloud host: a data dir holding the database and job folders, and a config file."""

    root: Path  # outside /tmp, which every sandbox replaces by its own anyway
    data: Path
    job: Path  # this job's folder, inside the data dir
    other_job: Path
    database: Path
    config: Path  # a secret file outside the data dir
    outside: Path  # a writable host folder that is none of the above


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[Layout]:
    # Scratch folders under /tmp, which every sandbox hides: the tests show this fake host to the job
    # read-only (SandboxPolicy.readonly), as the host's own folders are.
    root = tmp_path / "host"
    data = root / "data"
    lay = Layout(
        root=root,
        data=data,
        job=data / "jobs" / "mine",
        other_job=data / "jobs" / "other",
        database=data / "db.sqlite3",
        config=root / "etc" / "labcloud.toml",
        outside=root / "outside",
    )
    for d in (lay.job, lay.other_job, lay.config.parent, lay.outside):
        d.mkdir(mode=0o755, parents=True)
    for d in (
        root,
        data,
        data / "jobs",
        *(p for p in (lay.job, lay.other_job, lay.config.parent, lay.outside)),
    ):
        d.chmod(0o755)  # a fake host as it usually is, whatever the umask
    if JOB_USER is not None:  # as labcloud does: the job's folder belongs to the job's user
        os.chown(lay.job, JOB_USER.uid, JOB_USER.gid)
    lay.database.write_text("SECRET-DATABASE")
    (lay.other_job / "result.txt").write_text("SECRET-OTHER-JOB")
    lay.config.write_text("SECRET-CONFIG")
    yield lay


class Recorder:
    def __init__(self) -> None:
        self.text = ""

    def on_output(self, text: str) -> None:
        self.text += text

    def on_progress(self, fraction: float) -> None:
        pass

    def should_cancel(self) -> bool:
        return False


def run_sandboxed(
    lay: Layout, code: str, *, network: bool = False, hidden: tuple[Path, ...] | None = None
) -> tuple[ProcessResult, Any]:
    """Run a Python snippet in the job folder's sandbox; returns the result and its last JSON line."""
    policy = SandboxPolicy(
        writable=(lay.job,),
        hidden=(lay.data, lay.config) if hidden is None else hidden,
        network=network,
        readonly=(lay.root,),
        user=JOB_USER,
    )
    spec = LaunchSpec(
        argv=[PY, "-c", textwrap.dedent(code)],
        cwd=lay.job,
        env={"PATH": os.environ.get("PATH", os.defpath)},
        log_path=lay.job / "job.log",
        status_path=lay.job / "status.json",
        limits=Limits(timeout_s=30, grace_s=1),
        sandbox=policy,
    )
    rec = Recorder()
    result = run(spec, rec)
    assert result.outcome == "exited", (result, rec.text)
    lines = rec.text.strip().splitlines()
    return result, json.loads(lines[-1]) if lines else None


# A helper for the snippets: what happens when we try something.
TRY = """
import errno, json, os
def attempt(fn):
    try:
        return repr(fn())
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
def write(path):
    with open(path, "w") as f:
        return f.write("x")
def read(path):
    with open(path) as f:
        return f.read()
"""


def test_only_the_job_folder_is_writable(layout: Layout, tmp_path: Path) -> None:
    code = f"""{TRY}
print(json.dumps({{
    "own": attempt(lambda: write("out.txt")),
    "outside": attempt(lambda: write({str(layout.outside / "x.txt")!r})),
    "etc": attempt(lambda: write("/etc/labcloud-sandbox-test")),
    "tmp_path": attempt(lambda: write({str(tmp_path / "x.txt")!r})),
}}))
"""
    _, seen = run_sandboxed(layout, code)
    assert seen["own"] == "1"
    assert (layout.job / "out.txt").read_text() == "x"
    assert seen["outside"] == "EROFS"
    assert seen["etc"] == "EROFS"
    assert not Path("/etc/labcloud-sandbox-test").exists()
    assert not (layout.outside / "x.txt").exists()
    # /tmp is private to the sandbox: whatever the job does there never reaches the host.
    assert not (tmp_path / "x.txt").exists()


def test_hidden_data_dir_and_files_are_unreadable(layout: Layout) -> None:
    code = f"""{TRY}
print(json.dumps({{
    "data_dir": sorted(os.listdir({str(layout.data)!r})),
    "jobs_dir": sorted(os.listdir({str(layout.data / "jobs")!r})),
    "database": attempt(lambda: read({str(layout.database)!r})),
    "other_job": attempt(lambda: read({str(layout.other_job / "result.txt")!r})),
    "config": attempt(lambda: read({str(layout.config)!r})),
    "config_write": attempt(lambda: write({str(layout.config)!r})),
    "own": attempt(lambda: write("still-writable.txt")),
}}))
"""
    _, seen = run_sandboxed(layout, code)
    # Only the mount point of the job's own folder is left of the data dir.
    assert seen["data_dir"] == ["jobs"]
    assert seen["jobs_dir"] == ["mine"]
    assert seen["database"] == "ENOENT"
    assert seen["other_job"] == "ENOENT"
    # A hidden file is covered by /dev/null on a nodev mount: it cannot even be opened.
    assert seen["config"] in ("EACCES", "''")
    assert seen["config_write"] in ("EROFS", "EACCES", "EPERM")
    assert seen["own"] == "1"
    assert (layout.job / "still-writable.txt").exists()
    log = (layout.job / "job.log").read_text()
    assert "SECRET" not in log
    # The host's files are untouched.
    assert layout.database.read_text() == "SECRET-DATABASE"
    assert layout.config.read_text() == "SECRET-CONFIG"


def test_missing_hidden_paths_are_skipped(layout: Layout) -> None:
    hidden = (layout.data, layout.root / "does-not-exist", layout.root / "nor-this.toml")
    _, seen = run_sandboxed(layout, "print('[1]')", hidden=hidden)
    assert seen == [1]


def test_the_sandbox_cannot_be_undone(layout: Layout) -> None:
    # Even a job running as root has no capabilities: no remount, no unmounting the cover of the data dir.
    code = f"""{TRY}
import subprocess
caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff")][0]
umount = subprocess.run(["umount", {str(layout.data)!r}], capture_output=True).returncode
remount = subprocess.run(["mount", "-o", "remount,rw", "/"], capture_output=True).returncode
print(json.dumps({{
    "caps": caps, "umount": umount, "remount": remount,
    "database": attempt(lambda: read({str(layout.database)!r})),
    "etc": attempt(lambda: write("/etc/labcloud-sandbox-test")),
}}))
"""
    _, seen = run_sandboxed(layout, code)
    assert int(seen["caps"], 16) == 0
    assert seen["umount"] != 0
    assert seen["remount"] != 0
    assert seen["database"] == "ENOENT"
    assert seen["etc"] == "EROFS"


@pytest.fixture
def tcp_server() -> Iterator[int]:
    """A TCP server on the host's 127.0.0.1 that accepts connections; yields its port."""
    srv = socket.create_server(("127.0.0.1", 0))
    srv.settimeout(0.05)  # so that the thread notices `stop` (close() does not interrupt accept())
    port = srv.getsockname()[1]
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except TimeoutError:
                continue
            with conn:
                conn.sendall(b"hello")

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield port
    stop.set()
    t.join(timeout=5)
    srv.close()


NET = """
import json, socket
try:
    with socket.create_connection(("127.0.0.1", {port}), timeout=5) as s:
        print(json.dumps(s.recv(5).decode()))
except OSError as exc:
    print(json.dumps(type(exc).__name__))
"""


def test_no_network_by_default(layout: Layout, tcp_server: int) -> None:
    _, seen = run_sandboxed(layout, NET.format(port=tcp_server))
    assert seen == "ConnectionRefusedError"  # an empty network namespace: nobody listens there


def test_network_when_allowed(layout: Layout, tcp_server: int) -> None:
    _, seen = run_sandboxed(layout, NET.format(port=tcp_server), network=True)
    assert seen == "hello"


def test_own_pid_namespace(layout: Layout) -> None:
    code = """
import json, os
print(json.dumps({"pid": os.getpid(), "pids": sorted(int(p) for p in os.listdir("/proc") if p.isdigit())}))
"""
    _, seen = run_sandboxed(layout, code)
    # bwrap is pid 1, the job is pid 2; nothing of the host (such as this test) is visible.
    assert seen["pid"] == 2
    assert seen["pids"] == [1, 2]


def test_private_tmp(layout: Layout) -> None:
    marker = Path(tempfile.mkdtemp(prefix="labcloud-host-tmp-"))
    try:
        code = f"""
import json, os
print(json.dumps({{"host_tmp_visible": os.path.exists({str(marker)!r}), "tmp": os.listdir("/tmp")}}))
"""
        _, seen = run_sandboxed(layout, code)
    finally:
        marker.rmdir()
    assert seen["host_tmp_visible"] is False
    # Nothing of the host's /tmp shows but the mount points of what is bound back in (the software, and the
    # fake host of these tests, which lives in pytest's folder under /tmp).
    tmp = Path("/tmp")
    shown = (*software_paths(), layout.root.resolve(), layout.job.resolve())
    mount_points = {p.relative_to(tmp).parts[0] for p in shown if tmp in p.parents}
    assert set(seen["tmp"]) == mount_points


def test_wrap_command_mount_order(layout: Layout) -> None:
    policy = SandboxPolicy(
        writable=(layout.job,),
        hidden=(layout.data, layout.config, layout.database),
        readonly=(layout.root,),
    )
    first, retry = wrap_commands(["prog", "--arg"], policy, layout.job)
    # Nothing mounted below a hidden folder: the host's root is bound whole (quicker), and the sandbox is
    # started again folder by folder if it fails over a mount. Else folder by folder at once.
    assert (first[1:4] == ["--ro-bind", "/", "/"]) == (retry is not None)
    argv = retry or first
    assert argv[0] == bwrap_path()
    assert argv[-3:] == ["--", "prog", "--arg"]
    joined = " ".join(argv)
    # The host is shown folder by folder, never a hidden one: no mount of the host under /tmp, /run,
    # /var/lib... is copied into the sandbox. Its own root holds the mount points, read-only once made.
    assert "--ro-bind / /" not in joined and "--ro-bind-try /usr /usr " in joined
    assert " --perms 0755 --dir /var " in joined and "--ro-bind-try /var/cache /var/cache " in joined
    for private in HOST_PRIVATE:
        assert f"-bind-try {private} " not in joined and f"-bind-try {private}/" not in joined
    assert " --dev /dev --proc /proc --perms 0755 --tmpfs /home " in joined
    assert joined.index("--remount-ro / ") > joined.index(f"--bind {layout.job} {layout.job}")
    assert "--perms 1777 --tmpfs /tmp " in joined  # private, and writable by a job user
    hide = joined.index(f"--tmpfs {layout.data}")
    # The data dir is hidden: the folders down to the job's are made for the bind, enterable by a job user.
    assert joined.index(f"--perms 0755 --dir {layout.data / 'jobs'} ") > hide
    assert joined.index(f"--bind {layout.job} {layout.job}") > hide  # the job folder is bound back in
    assert f"--ro-bind /dev/null {layout.config}" in joined
    assert str(layout.database) not in joined  # already covered by the hidden data dir
    for flag in ("--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-net", "--new-session"):
        assert flag in argv
    assert "--die-with-parent" in argv
    assert argv[argv.index("--cap-drop") + 1] == "ALL"
    assert "--cap-add" not in argv and "setpriv" not in joined  # no job user: labcloud's own
    nobody = resolve_job_user("65534:65534") if os.geteuid() == 0 else None
    if nobody is not None:
        as_nobody = wrap_command(["prog"], SandboxPolicy(writable=(), hidden=(), user=nobody), layout.job)
        tail = as_nobody[as_nobody.index("--") + 1 :]
        assert tail[1:] == [
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
            "--",
            "prog",
        ]
        assert tail[0].endswith("setpriv")
    assert argv[argv.index("--chdir") + 1] == str(layout.job)
    with_net = wrap_command(["prog"], SandboxPolicy(writable=(), hidden=(), network=True), layout.job)
    assert "--unshare-net" not in with_net


@pytest.fixture
def busy_mounts(tmp_path: Path) -> Iterator[Path]:
    """A folder under /tmp (hidden from jobs) where mounts come and go all the time, as under a container
    engine's folder while it starts and stops containers: a shared mount, so each change reaches every copy
    of it, a sandbox's included. Needs root (the tests run as root in CI)."""
    assert os.geteuid() == 0, "this test mounts file systems: run the tests as root"
    folder = tmp_path / "engine"
    points = [folder / f"container-{i}" for i in range(4)]
    for point in points:
        point.mkdir(parents=True)
    subprocess.run(["mount", "--bind", str(folder), str(folder)], check=True)
    subprocess.run(["mount", "--make-shared", str(folder)], check=True)
    libc = ctypes.CDLL(None, use_errno=True)
    stop = threading.Event()
    cycles = [0]

    def churn() -> None:
        while not stop.is_set():
            for point in points:
                libc.mount(b"none", str(point).encode(), b"tmpfs", 0, None)
            for point in points:
                libc.umount2(str(point).encode(), 0)
            cycles[0] += 1

    thread = threading.Thread(target=churn, daemon=True)
    thread.start()
    try:
        yield folder
    finally:
        stop.set()
        thread.join(10)
        for point in points:
            libc.umount2(str(point).encode(), 2)  # MNT_DETACH: whatever is left
        subprocess.run(["umount", "--lazy", str(folder)], check=False)
    assert cycles[0] > 10, "the mounts did not change while the sandboxes started"


def test_sandboxes_start_while_mounts_under_a_hidden_folder_come_and_go(
    busy_mounts: Path, tmp_path: Path
) -> None:
    """Mounts under a hidden folder (a container engine's, under /tmp or /var/lib) never enter a sandbox: a
    job starts however busy they are, and finds none of them. Copying the host's every mount made about half
    of these starts fail ("Unable to apply mount flags: remount ...: Invalid argument")."""
    job = tmp_path / "job"
    job.mkdir()
    argv = wrap_command(
        ["sh", "-c", "cat /proc/self/mountinfo"],
        SandboxPolicy(writable=(job,), hidden=(), user=JOB_USER),
        job,
    )
    failed, leaked = [], 0
    for _ in range(60):
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        if out.returncode != 0:
            failed.append(out.stderr.strip())
        leaked += str(busy_mounts) in out.stdout
    assert failed == []
    assert leaked == 0


def test_what_is_mounted_below_a_folder_is_read_from_the_mount_table(tmp_path: Path) -> None:
    assert os.geteuid() == 0, "this test mounts file systems: run the tests as root"
    busy, quiet = tmp_path / "with a space" / "busy", tmp_path / "quiet"
    (busy / "inner").mkdir(parents=True)
    quiet.mkdir()
    assert not mounts_below({busy}) and not mounts_below({quiet}) and not mounts_below(set())
    subprocess.run(["mount", "-t", "tmpfs", "none", str(busy / "inner")], check=True)
    try:
        assert mounts_below({busy}) and mounts_below({busy / "inner"}) and mounts_below({quiet, busy})
        assert not mounts_below({quiet}) and not mounts_below({busy / "inn"})
    finally:
        subprocess.run(["umount", str(busy / "inner")], check=True)
    assert not mounts_below({busy})


def test_a_sandbox_that_fails_over_a_mount_starts_again_folder_by_folder(
    layout: Layout, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The whole root was bound (nothing was mounted below a hidden folder when the job was set up) and
    bwrap failed over a mount: the supervisor starts the sandbox again from the argv that shows the host
    folder by folder, and the job runs."""
    from labcloud.execution import process

    def whole_then_split(argv: list[str], policy: SandboxPolicy, cwd: Path) -> Any:
        _, split = wrap_commands(argv, policy, cwd)
        split = split or wrap_commands(argv, policy, cwd)[0]
        # A whole-root start that fails the way a vanished mount does ("No such file or directory").
        failing = [split[0], "--ro-bind", str(layout.root / "gone"), "/gone", *split[1:]]
        return failing, split

    monkeypatch.setattr(process, "wrap_commands", whole_then_split)
    result, seen = run_sandboxed(layout, "import json; print(json.dumps('ran'))")
    assert seen == "ran" and result.exit_code == 0
    assert "starting it again" in (layout.job / "job.log").read_text()


def test_hidden_path_inside_the_job_folder_stays_hidden(layout: Layout) -> None:
    secret = layout.job / "secrets"
    secret.mkdir()
    (secret / "key").write_text("SECRET-KEY")
    code = f"""{TRY}
print(json.dumps(attempt(lambda: read({str(secret / "key")!r}))))
"""
    _, seen = run_sandboxed(layout, code, hidden=(layout.data, secret))
    assert seen == "ENOENT"


@pytest.mark.sandbox
def test_readonly_paths_show_through_the_private_tmp(tmp_path: Path) -> None:
    """An interpreter installed under /tmp must still run inside the sandbox, read-only."""
    tool = tmp_path / "venv" / "bin"
    tool.mkdir(parents=True)
    (tool / "hello.sh").write_text("#!/bin/sh\necho from-tmp\n")
    (tool / "hello.sh").chmod(0o755)
    job = tmp_path / "job"
    job.mkdir()
    argv = wrap_command(
        ["sh", "-c", f"{tool}/hello.sh; touch {tool}/x 2>/dev/null || echo read-only"],
        SandboxPolicy(writable=(job,), hidden=(), readonly=(tmp_path / "venv",)),
        job,
    )
    out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert out.stdout.split() == ["from-tmp", "read-only"], out.stderr
    assert not (tool / "x").exists()


def test_jobs_run_as_an_unprivileged_host_user(layout: Layout) -> None:
    """Run by root, a job is another host user: the kernel checks its file accesses as that user's."""
    canary = layout.root / "root-only"
    canary.write_text("SECRET-ROOT-ONLY")
    canary.chmod(0o600)
    readable = layout.root / "everyone"
    readable.write_text("hello")
    readable.chmod(0o644)
    code = f"""{TRY}
print(json.dumps({{
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
    "canary": attempt(lambda: read({str(canary)!r})),
    "readable": attempt(lambda: read({str(readable)!r})),
    "chmod": attempt(lambda: os.chmod({str(canary)!r}, 0o644)),
    "own": attempt(lambda: write("mine.txt")),
}}))
"""
    _, seen = run_sandboxed(layout, code)
    uid, euid, gid, egid, groups = seen["ids"]
    if JOB_USER is not None:
        assert (uid, euid, gid, egid) == (JOB_USER.uid, JOB_USER.uid, JOB_USER.gid, JOB_USER.gid)
        assert groups in ([], [JOB_USER.gid])
        assert (layout.job / "mine.txt").stat().st_uid == JOB_USER.uid
    assert uid != 0 and euid != 0
    assert seen["canary"] == "EACCES"
    assert seen["chmod"] in ("EPERM", "EROFS")
    assert seen["readable"] == "'hello'"
    assert seen["own"] == "1"
    assert canary.read_text() == "SECRET-ROOT-ONLY"


def test_a_job_cannot_hard_link_a_host_file_into_its_folder(layout: Layout) -> None:
    """A host file the job sees (read-only) and may even write by its mode is on another mount than the
    job's folder: no hard link to it can appear among the job's files."""
    shared = layout.root / "shared.txt"
    shared.write_text("SECRET-SHARED")
    shared.chmod(0o666)
    code = f"""{TRY}
print(json.dumps({{"link": attempt(lambda: os.link({str(shared)!r}, "linked.txt"))}}))
"""
    _, seen = run_sandboxed(layout, code)
    assert seen["link"] == "EXDEV", seen
    assert not (layout.job / "linked.txt").exists()
    assert shared.stat().st_nlink == 1


def test_the_hosts_private_folders_are_empty(layout: Layout) -> None:
    """Service sockets (/run), homes, service state, logs and temporary files of the host are covered."""
    code = f"""
import json, os
seen = {{}}
for path in {[str(p) for p in HOST_PRIVATE]!r}:
    try:
        seen[path] = sorted(os.listdir(path))
    except OSError as exc:
        seen[path] = exc.strerror
print(json.dumps(seen))
"""
    _, seen = run_sandboxed(layout, code)
    # Only mount points of what is shown again (the job's folder, the software, this test's fake host) may
    # appear, as the first folder of their path below the hidden one.
    shown = [layout.job, layout.root, *software_paths()]
    for path, listing in seen.items():
        allowed = {
            Path(os.path.realpath(p)).relative_to(os.path.realpath(path)).parts[0]
            for p in shown
            if Path(os.path.realpath(path)) in Path(os.path.realpath(p)).parents
        }
        assert isinstance(listing, list), (path, listing)
        assert set(listing) <= allowed, (path, listing)


def test_no_unix_socket_of_the_host_is_reachable(layout: Layout, tmp_path: Path) -> None:
    """A job cannot talk to a service on the host through a Unix socket, with or without network: it finds
    none where services keep them, and a canary socket in a hidden folder is out of its reach."""
    canary = tmp_path / "canary.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(canary))
    canary.chmod(0o777)
    server.listen(5)
    try:
        code = f"""
import json, os, socket, stat
reached, found = [], []
for top in ("/run", "/var/run", "/var/lib", "/tmp", "/root", "/home", "/dev/shm", "/var/tmp"):
    for folder, dirs, files in os.walk(top):
        for name in files + dirs:
            path = os.path.join(folder, name)
            try:
                if stat.S_ISSOCK(os.lstat(path).st_mode):
                    found.append(path)
            except OSError:
                pass
for path in found + [{str(canary)!r}]:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.connect(path)
        reached.append(path)
    except OSError:
        pass
    finally:
        s.close()
print(json.dumps({{"found": found, "reached": reached}}))
"""
        for network in (False, True):
            _, seen = run_sandboxed(layout, code, network=network)
            assert seen == {"found": [], "reached": []}
    finally:
        server.close()


# --- without the sandbox ----------------------------------------------------------------------------------


def python_for(user: JobUser | None) -> str:
    """An interpreter ``user`` may run by its path (this one may live in a folder private to root)."""
    for candidate in (PY, shutil.which("python3", path="/usr/local/bin:/usr/bin:/bin")):
        if candidate and (
            user is None or unreachable(Path(os.path.realpath(candidate)).parent, user) is None
        ):
            return candidate
    raise AssertionError(f"no Python interpreter that {user} may run")


def test_with_the_sandbox_off_root_still_runs_jobs_as_the_job_user(open_scratch: Path) -> None:
    """``sandbox = off`` gives up the sandbox, never the job user: run by root, the supervisor drops to it
    (no supplementary groups, no way back to root through a setuid program) before the command starts."""
    sandboxing = resolve_sandboxing("off", "nobody")
    assert not sandboxing.enabled and not sandboxing.refuse
    assert sandboxing.user == JOB_USER
    job = open_scratch / "job"
    job.mkdir()
    job.chmod(0o755)
    if JOB_USER is not None:
        os.chown(job, JOB_USER.uid, JOB_USER.gid)
    canary = open_scratch / "root-only"
    canary.write_text("SECRET-ROOT-ONLY")
    canary.chmod(0o600)
    code = f"""{TRY}
status = dict(line.split(":", 1) for line in open("/proc/self/status") if ":" in line)
print(json.dumps({{
    "ids": [os.getuid(), os.geteuid(), os.getgid(), os.getegid(), os.getgroups()],
    "no_new_privs": status["NoNewPrivs"].strip(),
    "effective_caps": status["CapEff"].strip(),
    "canary": attempt(lambda: read({str(canary)!r})),
    "chmod": attempt(lambda: os.chmod({str(canary)!r}, 0o644)),
    "own": attempt(lambda: write({str(job / "mine.txt")!r})),
}}))
"""
    spec = LaunchSpec(
        argv=[python_for(sandboxing.user), "-c", textwrap.dedent(code)],
        cwd=job,
        env={"PATH": os.environ.get("PATH", os.defpath)},
        log_path=open_scratch / "job.log",
        status_path=open_scratch / "status.json",
        limits=Limits(timeout_s=30, grace_s=1),
        sandbox=None,
        user=sandboxing.user,
    )
    rec = Recorder()
    result = run(spec, rec)
    assert result.outcome == "exited" and result.exit_code == 0, (result, rec.text)
    seen = json.loads(rec.text.strip().splitlines()[-1])
    uid, euid, gid, egid, groups = seen["ids"]
    assert uid != 0 and euid != 0 and gid != 0 and egid != 0, seen
    if JOB_USER is not None:
        assert (uid, euid, gid, egid) == (JOB_USER.uid, JOB_USER.uid, JOB_USER.gid, JOB_USER.gid)
        assert groups in ([], [JOB_USER.gid])
        assert seen["no_new_privs"] == "1"
        assert (job / "mine.txt").stat().st_uid == JOB_USER.uid
    assert int(seen["effective_caps"], 16) == 0
    assert seen["canary"] == "EACCES"
    assert seen["chmod"] == "EPERM"
    assert seen["own"] == "1"
    assert canary.read_text() == "SECRET-ROOT-ONLY"


def test_a_job_user_that_cannot_reach_its_folder_is_told_why(open_scratch: Path) -> None:
    """Without a sandbox the job uses its folder's real path: when a folder on the way is closed to the job
    user, the job does not start, and its message names the setting and the folder."""
    user = JobUser(65534, 65534, "nobody")
    closed = open_scratch / "closed"
    inner = closed / "jobs" / "job"
    inner.mkdir(parents=True)
    for folder in (closed / "jobs", inner):
        folder.chmod(0o755)
    closed.chmod(0o700)
    problem = unreachable(inner, user)
    assert problem is not None and "sandbox = off" in problem and f"{closed} (mode 0700" in problem, problem
    closed.chmod(0o711)  # search, not listing, is all it takes
    assert unreachable(inner, user) is None
