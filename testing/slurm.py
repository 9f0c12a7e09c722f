"""A real single-node Slurm cluster (munged, slurmctld, slurmd), the recipe of docs/slurm-test-cluster.md.

Everything lives under one scratch directory: the configuration, a private munged and its key, the state,
spool, logs and pid files; nothing under ``/etc`` is read or written. The node is ``hostname -s`` with the
CPUs and memory ``slurmd -C`` reports, both daemons listen on free loopback ports, and there are two
partitions, ``debug`` (the default) and ``gpu`` (same node, no GRES: the machine has no GPUs).

``with slurm_cluster(root) as cluster: cluster.run("sbatch", "--wrap", "true")`` for the benchmarks;
tests/slurm.py wraps the same recipe as pytest fixtures. Every client command needs ``SLURM_CONF``:
``cluster.env()`` gives it, ``cluster.run(...)`` uses it (and runs in ``root``, so that ``slurm-N.out`` files
land there rather than in the caller's directory). Finished jobs stay visible to ``scontrol show job`` for
``MinJobAge`` (300 s) and to ``sacct -c`` (from the jobcomp file, no slurmdbd) for good.

Several clusters can run at once on one machine (one per pytest-xdist worker, say): each has its own
``ClusterName`` (random suffix), ports, munged and directories. They share the node's name and each believes
it owns all of the node's CPUs and memory, so jobs of two clusters do compete for the real CPUs.

Timings on a 2-CPU machine: ``start`` 0.15-0.2 s to an idle node, ``stop`` 0.1-0.2 s (jobs included). The
first job waits for slurmctld's first scheduling pass, about 3 s after it started; later jobs start on its
one-second tick (pending up to ~1 s).

``start(root, rest=True)`` also runs slurmrestd (``openapi/v0.0.38``, JWT authentication:
``AuthAltTypes=auth/jwt`` with a key in ``state/``) as nobody on another free port: ``cluster.rest_url``, and
``cluster.token(user)`` for ``X-SLURM-USER-TOKEN``. It adds some 0.05-0.1 s to ``start``; off by default.

Needs the Debian packages ``slurm-wlm`` and ``munge`` (with ``rest``, also ``slurmrestd`` and
``slurm-wlm-jwt-plugin``; scripts/ensure-system.sh --postgres installs them all) and root: ``SlurmUser=root``,
and slurmd runs jobs as the submitting user.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from testing.daemons import PortTaken, alive, free_ports, holders, run_client, start_retrying

START_DEADLINE_S = 30.0
STOP_GRACE_S = 3.0
PARTITIONS = ("debug", "gpu")
DAEMONS = ("munged", "slurmctld", "slurmd", "slurmrestd")
REST_API = "v0.0.38"  # the newest openapi plugin of Debian 12's Slurm 22.05
# Unix socket paths are limited to 107 bytes, and munged's socket and slurmstepd's
# (``<spool>/<node>_<job>.<step>``) live under root.
MAX_ROOT_LEN = 70
POLL_S = 0.05
INHERITED_PREFIXES = ("SLURM_", "SBATCH_", "SALLOC_", "SRUN_", "SQUEUE_", "SINFO_", "SACCT_", "SCANCEL_")


class SlurmUnavailable(RuntimeError):
    """A Slurm or munge binary is missing, or the cluster did not come up."""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    node: str
    cpus: int
    memory_mb: int
    partitions: tuple[str, ...] = PARTITIONS
    rest_port: int = 0  # slurmrestd's, when started with ``rest=True``
    rest_dir: Path | None = None  # where slurmrestd reads its copy of slurm.conf
    pids: dict[str, int] = field(default_factory=dict)
    _processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict, repr=False)

    def env(self) -> dict[str, str]:
        """The environment of every client command: this process's, plus ``SLURM_CONF``, minus inherited
        Slurm variables (``SLURM_*``, ``SBATCH_*``...: another cluster's, or a user's defaults)."""
        env = {key: value for key, value in os.environ.items() if not key.startswith(INHERITED_PREFIXES)}
        env["SLURM_CONF"] = str(self.conf)
        return env

    def run(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a client command (``sbatch``, ``squeue``, ``scontrol`` ...) against this cluster, in ``root``.

        Output is captured as text; with ``check`` a non-zero exit raises ``CalledProcessError`` (with the
        command's stderr attached as a note).
        """
        return run_client(list(args), self.env(), self.root, check, timeout)

    @property
    def rest_url(self) -> str:
        """slurmrestd's base URL (``http://127.0.0.1:PORT``); ``""`` unless started with ``rest=True``."""
        return f"http://127.0.0.1:{self.rest_port}" if self.rest_port else ""

    def token(self, user: str = "root", lifespan: int = 600) -> str:
        """A JWT for slurmrestd (``scontrol token``), valid ``lifespan`` seconds (cluster started with
        ``rest=True``)."""
        out = self.run("scontrol", "token", f"username={user}", f"lifespan={lifespan}").stdout.strip()
        if not out.startswith("SLURM_JWT="):
            raise SlurmUnavailable(f"scontrol token answered {out!r}")
        return out.removeprefix("SLURM_JWT=")

    def job_ids(self) -> list[str]:
        """The ids of the jobs ``squeue`` shows (pending, running, completing)."""
        return self.run("squeue", "-h", "-o", "%i").stdout.split()

    def cancel_all(self, timeout: float = 30) -> None:
        """``scancel`` every job and wait until ``squeue`` is empty; ``TimeoutError`` if it does not empty."""
        deadline = time.monotonic() + timeout
        ids = self.job_ids()
        while ids:
            self.run("scancel", *ids, check=False)
            if time.monotonic() > deadline:
                shown = self.run("squeue", "-o", "%i %T %r", check=False).stdout
                raise TimeoutError(f"jobs still queued {timeout:.0f} s after scancel:\n{shown}")
            time.sleep(POLL_S)
            ids = self.job_ids()

    def node_state(self, timeout: float = 5) -> str:
        """The node's state as ``sinfo`` prints it (``idle``, ``mix``, ``alloc``, ``idle*`` ...); ``""`` if
        ``sinfo`` fails or takes longer than ``timeout``."""
        try:
            return self.run(
                "sinfo", "-h", "-n", self.node, "-o", "%t", check=False, timeout=timeout
            ).stdout.strip()
        except subprocess.TimeoutExpired:
            return ""

    def wait_idle(self, timeout: float = 30) -> None:
        """Wait until the node is ``idle``; ``TimeoutError`` (with ``scontrol show node``) if it is not."""
        deadline = time.monotonic() + timeout
        while True:
            state = self.node_state()
            if state == "idle":
                return
            if time.monotonic() > deadline:
                shown = self.run("scontrol", "show", "node", self.node, check=False)
                raise TimeoutError(
                    f"node {self.node} is {state or 'unknown'!r}, not idle, after {timeout:.0f} s:\n"
                    f"{shown.stdout}{shown.stderr}"
                )
            time.sleep(POLL_S)

    def log_tail(self, lines: int = 20) -> str:
        """The last lines each daemon wrote, for error messages (its stderr: the log file and what came
        before it was opened)."""
        parts = []
        for name in DAEMONS:
            for log in (self.root / "log" / f"{name}.out", self.root / "log" / f"{name}.log"):
                with contextlib.suppress(OSError):
                    text = log.read_text(errors="replace").splitlines()[-lines:]
                    if text:
                        parts.append(f"--- {log.name}\n" + "\n".join(text))
                        break
        return "\n".join(parts) or "(no log)"


@contextlib.contextmanager
def slurm_cluster(root: Path, rest: bool = False) -> Iterator[SlurmCluster]:
    """A running cluster whose files live under ``root``; stopped afterwards (``root`` is left)."""
    cluster = start(root, rest=rest)
    try:
        yield cluster
    finally:
        stop(cluster)


def start(root: Path, attempts: int = 3, rest: bool = False) -> SlurmCluster:
    """Write the configuration, start munged, slurmctld and slurmd, and wait until the node is idle; with
    ``rest`` also slurmrestd (JWT authentication) on a free port: ``cluster.rest_url``, ``cluster.token()``.

    :class:`SlurmUnavailable` (with the logs' tails) if a binary is missing or the cluster does not come up.
    """
    wanted = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", *(["slurmrestd"] if rest else [])]
    missing = [name for name in wanted if shutil.which(name) is None]
    if missing:
        packages = "slurm-wlm, munge, slurmrestd and slurm-wlm-jwt-plugin" if rest else "slurm-wlm and munge"
        raise SlurmUnavailable(
            f"Slurm is not installed (missing: {', '.join(missing)}); install the Debian packages "
            f"{packages}: scripts/ensure-system.sh --postgres"
        )
    root = Path(root).absolute()
    if len(str(root)) > MAX_ROOT_LEN:
        raise SlurmUnavailable(f"{root} is too long for the Unix sockets under it (at most {MAX_ROOT_LEN})")
    node = socket.gethostname().split(".", 1)[0]
    hardware = _node_hardware()
    cluster_name = f"labcloud-{secrets.token_hex(4)}"
    return start_retrying(
        attempts,
        lambda _attempt: _prepare(root, node, hardware, cluster_name, rest),
        _launch,
        stop,
        SlurmUnavailable,
        SlurmCluster.log_tail,
    )


def _node_hardware() -> dict[str, int]:
    """CPUs, Boards, SocketsPerBoard, CoresPerSocket, ThreadsPerCore and RealMemory, as ``slurmd -C`` says."""
    try:
        out = subprocess.run(["slurmd", "-C"], capture_output=True, text=True, check=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        raise SlurmUnavailable(f"slurmd -C failed: {exc}") from exc
    fields = dict(re.findall(r"(\w+)=(\d+)", out.splitlines()[0] if out else ""))
    wanted = ("CPUs", "Boards", "SocketsPerBoard", "CoresPerSocket", "ThreadsPerCore", "RealMemory")
    if not all(key in fields for key in wanted):
        raise SlurmUnavailable(f"unexpected output of slurmd -C: {out!r}")
    return {key: int(fields[key]) for key in wanted}


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _answers_http(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET /openapi/v3 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(5) == b"HTTP/"
    except OSError:
        return False


def _prepare(
    root: Path, node: str, hw: dict[str, int], cluster_name: str, rest: bool = False
) -> SlurmCluster:
    """Fresh directories, munge key and slurm.conf (and with ``rest`` the JWT key) under ``root`` (a previous
    attempt's are replaced)."""
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log", "run"):
        shutil.rmtree(root / sub, ignore_errors=True)
    munge = root / "munge"
    munge.mkdir(mode=0o711)
    munge.chmod(0o711)
    for sub in ("state", "log", "run", f"spool/slurmd-{node}"):
        (root / sub).mkdir(parents=True)
    (root / "plugstack.conf").write_text("")
    ctld_port, slurmd_port, rest_port = free_ports(3)
    jwt_key = root / "state" / "jwt.key"  # read by slurmctld (root) only; slurmrestd forwards the tokens
    if rest:
        jwt_key.write_bytes(secrets.token_bytes(32))
        jwt_key.chmod(0o600)
    memory_mb = hw["RealMemory"]  # never more than slurmd -C reports, or the node is drained at registration
    conf = root / "slurm.conf"
    lines = [
        f"ClusterName={cluster_name}",
        f"SlurmctldHost={node}(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        f"SlurmdPort={slurmd_port}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={munge / 'munge.socket.2'}",
        f"StateSaveLocation={root / 'state'}",
        f"SlurmdSpoolDir={root / 'spool'}/slurmd-%n",
        f"SlurmctldPidFile={root / 'run' / 'slurmctld.pid'}",
        f"SlurmdPidFile={root / 'run' / 'slurmd.pid'}",
        f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
        f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
        f"PlugStackConfig={root / 'plugstack.conf'}",
        "MpiDefault=none",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/linux",
        "JobAcctGatherFrequency=1",
        "JobAcctGatherParams=OverMemoryKill",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root / 'log' / 'jobcomp.txt'}",
        *(["AuthAltTypes=auth/jwt", f"AuthAltParameters=jwt_key={jwt_key}"] if rest else []),
        "# No GresTypes: no GRES, the gpu partition has no GPUs (an empty GresTypes= is a parse error)",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core_Memory",
        "DefMemPerCPU=1024",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=batch_sched_delay=0,sched_min_interval=0",
        "ReturnToService=2",
        "MinJobAge=300",
        "MailProg=/bin/true",
        "KillWait=1",
        "OverTimeLimit=0",
        "InactiveLimit=0",
        f"NodeName={node} NodeAddr=127.0.0.1 CPUs={hw['CPUs']} Boards={hw['Boards']} "
        f"SocketsPerBoard={hw['SocketsPerBoard']} CoresPerSocket={hw['CoresPerSocket']} "
        f"ThreadsPerCore={hw['ThreadsPerCore']} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName={PARTITIONS[0]} Nodes={node} Default=YES MaxTime=INFINITE State=UP",
        *(f"PartitionName={p} Nodes={node} Default=NO MaxTime=INFINITE State=UP" for p in PARTITIONS[1:]),
    ]
    conf.write_text("\n".join(lines) + "\n")
    return SlurmCluster(
        root=root,
        conf=conf,
        node=node,
        cpus=hw["CPUs"],
        memory_mb=memory_mb,
        rest_port=rest_port if rest else 0,
    )


def _launch(cluster: SlurmCluster) -> None:
    root, munge, log = cluster.root, cluster.root / "munge", cluster.root / "log"
    key = munge / "munge.key"
    keygen = subprocess.run(
        ["mungekey", "--create", f"--keyfile={key}", "--force"], capture_output=True, text=True, timeout=30
    )
    if keygen.returncode != 0:
        raise SlurmUnavailable(f"mungekey failed: {keygen.stderr.strip()}")
    key.chmod(0o400)
    commands = {
        "munged": [
            "munged",
            "--foreground",
            f"--socket={munge / 'munge.socket.2'}",
            f"--key-file={key}",
            f"--pid-file={munge / 'munged.pid'}",
            f"--log-file={log / 'munged.log'}",
            f"--seed-file={munge / 'munged.seed'}",
            "--force",
        ],
        "slurmctld": ["slurmctld", "-D", "-i", "-f", str(cluster.conf)],
        "slurmd": ["slurmd", "-D", "-f", str(cluster.conf), "-N", cluster.node],
    }
    for name, command in commands.items():
        with open(log / f"{name}.out", "wb") as out:
            process = subprocess.Popen(
                command,
                env=cluster.env(),
                cwd=root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C of the caller reaches it only through stop()
            )
        cluster._processes[name] = process
        cluster.pids[name] = process.pid
        if name == "munged":
            _wait_for(lambda: (munge / "munge.socket.2").is_socket(), cluster, "munged's socket")
        elif name == "slurmctld":  # a client that finds no listener retries only a second later
            port = int(re.findall(r"^SlurmctldPort=(\d+)$", cluster.conf.read_text(), re.M)[0])
            _wait_for(functools.partial(_listening, port), cluster, "slurmctld's port")
    # A short timeout: should another program hold slurmctld's port, sinfo would wait for it 10 s.
    _wait_for(lambda: cluster.node_state(timeout=1) == "idle", cluster, f"node {cluster.node} idle")
    if cluster.rest_port:
        _launch_rest(cluster)


def _launch_rest(cluster: SlurmCluster) -> None:
    """slurmrestd on ``rest_port``, as nobody (it refuses root), passing each request's JWT on.

    It reads slurm.conf once it is nobody, and ``root`` may lie where only root can go (pytest's directories
    are 0700): it gets a copy in a directory of its own under the system's temporary directory."""
    cluster.rest_dir = Path(tempfile.mkdtemp(prefix="labcloud-slurmrestd-"))
    cluster.rest_dir.chmod(0o755)
    conf = cluster.rest_dir / "slurm.conf"
    shutil.copyfile(cluster.conf, conf)
    conf.chmod(0o644)
    command = [
        "slurmrestd",
        "-f",
        str(conf),
        "-u",
        "nobody",
        "-g",
        "nogroup",
        "-a",
        "rest_auth/jwt",
        "-s",
        f"openapi/{REST_API}",
        f"127.0.0.1:{cluster.rest_port}",
    ]
    with open(cluster.root / "log" / "slurmrestd.out", "wb") as out:
        process = subprocess.Popen(
            command,
            env=cluster.env() | {"SLURM_CONF": str(conf), "SLURM_JWT": "daemon"},
            cwd=cluster.root,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    cluster._processes["slurmrestd"] = process
    cluster.pids["slurmrestd"] = process.pid
    # An answer, not just a listener: another program may hold the port (and slurmrestd then exits)
    _wait_for(functools.partial(_answers_http, cluster.rest_port), cluster, "slurmrestd's answer")


def _wait_for(ready: Callable[[], bool], cluster: SlurmCluster, what: str) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while not ready():
        for name, process in cluster._processes.items():
            if process.poll() is not None:
                tail = cluster.log_tail()
                if "Address already in use" in tail:
                    raise PortTaken(tail)
                raise SlurmUnavailable(
                    f"{name} exited with {process.returncode} while waiting for {what}:\n{tail}"
                )
        if time.monotonic() > deadline:
            raise SlurmUnavailable(
                f"no {what} after {START_DEADLINE_S:.0f} s (node state {cluster.node_state(timeout=1)!r}):\n"
                f"{cluster.log_tail()}"
            )
        time.sleep(POLL_S)


def stop(cluster: SlurmCluster) -> None:
    """Cancel every job, ``scontrol shutdown``, wait for the daemons, SIGKILL whatever still holds files
    under ``root``, then stop munged. Never raises."""
    try:
        _stop(cluster)
    except Exception:  # a cleanup: it must not hide the error that brought us here
        with contextlib.suppress(Exception):
            for name in list(cluster.pids):
                _signal(cluster, name, signal.SIGKILL)
    if cluster.rest_dir is not None:
        shutil.rmtree(cluster.rest_dir, ignore_errors=True)
        cluster.rest_dir = None


def _stop(cluster: SlurmCluster) -> None:
    if "slurmrestd" in cluster.pids:  # ``scontrol shutdown`` does not reach it
        _signal(cluster, "slurmrestd", signal.SIGTERM)
        if not _wait_gone(cluster, [cluster.pids["slurmrestd"]], STOP_GRACE_S):
            _signal(cluster, "slurmrestd", signal.SIGKILL)
    slurm = [name for name in cluster.pids if name not in ("munged", "slurmrestd")]
    if _running(cluster, "slurmctld"):  # otherwise client commands would only wait for their timeouts
        with contextlib.suppress(Exception):
            cluster.cancel_all(timeout=10)
        with contextlib.suppress(Exception):
            cluster.run("scontrol", "shutdown", check=False, timeout=5)
        _wait_gone(cluster, [cluster.pids[name] for name in slurm], STOP_GRACE_S)
    for name in slurm:
        _signal(cluster, name, signal.SIGKILL)
    munged = cluster.pids.get("munged")
    leftovers = [pid for pid in holders(cluster.root) if pid != munged]
    for pid in leftovers:  # slurmstepd and jobs the shutdown left behind
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
    _wait_gone(cluster, leftovers, STOP_GRACE_S)
    if munged is not None:
        _signal(cluster, "munged", signal.SIGTERM)
        if not _wait_gone(cluster, [munged], STOP_GRACE_S):
            _signal(cluster, "munged", signal.SIGKILL)
            _wait_gone(cluster, [munged], STOP_GRACE_S)
    for process in cluster._processes.values():
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=0.1)
    cluster._processes.clear()
    cluster.pids.clear()


def _running(cluster: SlurmCluster, name: str) -> bool:
    process = cluster._processes.get(name)
    if process is not None:
        return process.poll() is None
    return alive(cluster.pids.get(name, 0))


def _signal(cluster: SlurmCluster, name: str, sig: int) -> None:
    """Signal a daemon if it still runs (through its Popen once reaped: its pid may have been reused)."""
    process = cluster._processes.get(name)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        if process is not None:
            if process.poll() is None:
                process.send_signal(sig)
        elif alive(cluster.pids.get(name, 0)):
            os.kill(cluster.pids[name], sig)


def _wait_gone(cluster: SlurmCluster, pids: Iterable[int], timeout: float) -> bool:
    pending = list(pids)
    ours = {process.pid: process for process in cluster._processes.values()}
    deadline = time.monotonic() + timeout
    while True:
        for process in cluster._processes.values():
            process.poll()  # reap our own children
        pending = [pid for pid in pending if (ours[pid].returncode is None if pid in ours else alive(pid))]
        if not pending:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
