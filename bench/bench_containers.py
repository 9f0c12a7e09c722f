"""Containers: submit -> container running, trivial container jobs/s and a container job's log on its way to
the browser, each beside the container engine's own client, measured in the same run.

Targets (issue): labcloud adds at most 20% to the engine's own start time (submit -> the container's command
runs, <= 1.2 x the engine's ``run`` -> the command runs), and a line a container job writes reaches the
browser (an SSE client of ``/api/v1/jobs/{id}/logs?follow=true``) within 100 ms.

Engines: Docker as a private ``dockerd`` and Podman on a private storage (testing/engines.py), each with
``labcloud/busybox:1`` imported. Each gets a ``labcloud serve`` of its own (local executor, SQLite, default
settings otherwise) whose settings name that engine as the container tests do (container_engine, docker_host
or podman_options, container_run_options for Podman's ulimits), with room for every job at once.

- ``start``: one job at a time on an idle engine, alternating engine and labcloud. The command is
  ``sh -c 'echo started | ts %.s'``: busybox ``ts`` stamps the line with the host's clock to the
  microsecond (busybox ``date`` has no ``%N``), i.e. when the container's command ran. The engine's own:
  before ``<engine> run --rm <labcloud's flags> IMAGE ...`` -> the stamp (``start``), -> the client's exit
  (``run``: the container's exit and removal included). labcloud's: before POST /api/v1/jobs -> the stamp
  (``start``), -> ``started_at`` (``running`` in labcloud's sense: set right before the supervisor starts
  the engine's client) and -> ``finished_at`` (``done``: container removed, end recorded). ``ratio_start``
  and ``ratio_done`` are labcloud's medians over the engine's; the phases come from the job's events.
- ``throughput``: K ``true`` jobs at once, rounds alternating: labcloud's K submitted by 4 threads (all
  dispatched at once), up to the last ``finished_at``; the engine's K ``<engine> run --rm ... true`` started
  together, up to the last client's exit. jobs/s = K / (last end - first submit); medians.
- ``log``: a job writing a stamped line every ~73 ms (not a multiple of the log follower's polling, so that
  lines fall at every phase of it), followed by an SSE client from its submission. write (the stamp) ->
  the line's arrival at the SSE client; split into write -> the line in the job's log file on the server
  (a thread here polls its size every 2 ms: the engine's streaming and the supervisor) and the file -> the
  SSE client (labcloud's follower). Beside it the same loop under ``<engine> run`` whose stdout the
  benchmark reads (the engine's own streaming).

The baseline runs with the flags labcloud gives every container (read-only root, no capabilities, no new
privileges, user 65534, pids, memory and CPU limits, a /tmp tmpfs, no network, ``--pull=never``, and the
engine's ``run_args``: Podman's ulimits); labcloud's own name, labels, mounts, variables file and control
group parent are part of what it adds. Only the first backend given runs: the engines are measured here,
not the database.
"""

from __future__ import annotations

import json
import re
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.bench_engines import Round, busy_cpu_s, p, per_round, server_pid, throughput_metrics, tree_cpu_s
from bench.bench_jobs import JobsServer, submit, threaded, ts, wait_terminal
from bench.harness import Result, run_all, running_server
from labcloud.execution.containers import PIDS_LIMIT
from testing.engines import IMAGE, DockerDaemon, EngineCLI, import_image, private_podman

START_APP = "bench-container-started"
TRUE_APP = "bench-container-true"
LOG_APP = "bench-container-log"
CPUS, MEMORY_MB = 1, 64
STAMP = ["sh", "-c", "echo started | ts %.s"]
LOG_INTERVAL_US = 73_000
STAMPED = re.compile(r"^(\d{9,}\.\d+) (\w+)$")
TARGETS = {
    "docker": "start <= 1.2 x docker's own; log write -> browser <= 100 ms",
    "podman": "start <= 1.2 x podman's own; log write -> browser <= 100 ms",
}
START_TARGET = "labcloud start <= 1.2 x the engine's own (ratio_start <= 1.2)"
THROUGHPUT_TARGET = "reported beside the engine's own"
LOG_TARGET = "write -> SSE client <= 100 ms"
SUBMIT_CLIENTS = 4
POLL_S = 0.1  # waiting for a job's end: finished_at is the measure, polling only notices it
IDLE_PAUSE_S = 0.2
FILE_POLL_S = 0.002
JOB_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Sizes:
    start: int  # single jobs, each side
    jobs: int  # K, per throughput round
    rounds: int
    log_jobs: int  # each side
    log_lines: int  # per log job


FULL = Sizes(start=15, jobs=10, rounds=3, log_jobs=3, log_lines=20)
QUICK = Sizes(start=3, jobs=4, rounds=1, log_jobs=1, log_lines=8)


def log_command(lines: int) -> list[str]:
    loop = f"for i in $(seq {lines}); do echo line$i | ts %.s; usleep {LOG_INTERVAL_US}; done"
    return ["sh", "-c", loop]


def run_flags(cli: EngineCLI) -> list[str]:
    """What labcloud gives every container (execution/containers.py), without its name, labels, mounts,
    variables file and control group parent."""
    return [
        "--rm",
        "--pull=never",
        "--read-only",
        "--cap-drop=ALL",
        "--security-opt=no-new-privileges",
        "--user=65534:65534",
        f"--pids-limit={PIDS_LIMIT}",
        f"--memory={MEMORY_MB}m",
        f"--memory-swap={MEMORY_MB}m",
        f"--cpus={CPUS}",
        "--tmpfs=/tmp:rw,nosuid,nodev,mode=1777",
        "--network=none",
        "--entrypoint=",
        *cli.run_args,
    ]


def app_spec(name: str, command: list[str]) -> str:
    entry = {
        "runtime": "container",
        "image": IMAGE,
        "command": command,
        "resources": {"cpus": CPUS, "memory_mb": MEMORY_MB, "gpus": 0, "timeout_s": 60},
    }
    spec = {"name": name, "title": name, "versions": {"1.0": {"entrypoints": {"run": entry}}}}
    return json.dumps(spec)


def server_env(cli: EngineCLI, apps: Path, jobs: int) -> dict[str, str]:
    """A server that runs container apps on ``cli``'s engine, with room for ``jobs`` of them at once."""
    pairs = zip(cli.run_args[::2], cli.run_args[1::2], strict=True)
    env = {
        "LABCLOUD_APPS_DIR": str(apps),
        "LABCLOUD_CONTAINER_ENGINE": cli.kind,
        "LABCLOUD_CONTAINER_RUN_OPTIONS": json.dumps([f"{option}={value}" for option, value in pairs]),
        "LABCLOUD_LOCAL_CPUS": str(max(jobs, 2) * CPUS),
        "LABCLOUD_LOCAL_MEMORY_MB": str(max(jobs, 2) * MEMORY_MB + 1024),
    }
    if cli.kind == "docker":
        env["LABCLOUD_DOCKER_HOST"] = cli.argv[cli.argv.index("-H") + 1]
    else:
        env["LABCLOUD_PODMAN_OPTIONS"] = json.dumps(cli.argv[1:])
    return env


@contextmanager
def engine(kind: str) -> Iterator[EngineCLI]:
    """A private engine of ``kind`` with the image imported."""
    with ExitStack() as stack:
        cli = (
            stack.enter_context(DockerDaemon()).cli
            if kind == "docker"
            else stack.enter_context(private_podman())
        )
        import_image(cli)
        yield cli


@contextmanager
def container_server(backend: str, cli: EngineCLI, sizes: Sizes) -> Iterator[JobsServer]:
    with tempfile.TemporaryDirectory(prefix="labcloud-bench-apps-") as tmp:
        apps = Path(tmp)
        for name, command in (
            (START_APP, STAMP),
            (TRUE_APP, ["true"]),
            (LOG_APP, log_command(sizes.log_lines)),
        ):
            (apps / f"{name}.yaml").write_text(app_spec(name, command))
        with running_server(backend, server_env(cli, apps, sizes.jobs)) as server:
            yield JobsServer(server, {"Authorization": f"Bearer {server.admin_token()}"})


# --------------------------------------------------------------------------------------------- helpers


def stamps(text: str) -> dict[str, float]:
    """``{word: stamp}`` of the stamped lines (``<epoch seconds> <word>``) in ``text``."""
    return {m[2]: float(m[1]) for line in text.splitlines() if (m := STAMPED.match(line.strip()))}


def epoch(value: str) -> float:
    return ts(value).timestamp()


def ms(samples: list[float], q: float) -> float:
    """The median (``q`` 50) or another percentile of ``samples`` (seconds), in ms."""
    return p([sample * 1000 for sample in samples], q)


def engine_call(cli: EngineCLI, *args: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        cli.command("run", *run_flags(cli), IMAGE, *args),
        env=cli.environ(),
        capture_output=True,
        text=True,
        timeout=JOB_TIMEOUT_S,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{cli.kind} run exited with {done.returncode}: {done.stderr.strip()[-500:]}")
    return done


def succeeded(c: httpx.Client, job_id: str) -> dict[str, Any]:
    job = wait_terminal(c, job_id, JOB_TIMEOUT_S, poll_s=POLL_S)
    if job["state"] != "succeeded":
        raise RuntimeError(f"job {job_id} {job['state']}: {job['message']}")
    return job


# ----------------------------------------------------------------------------------------------- start


@dataclass
class Starts:
    engine_start: list[float] = field(default_factory=list)  # before run -> the command's stamp
    engine_run: list[float] = field(default_factory=list)  # before run -> the client's exit
    lc_start: list[float] = field(default_factory=list)  # before POST -> the command's stamp
    lc_running: list[float] = field(default_factory=list)  # before POST -> started_at
    lc_done: list[float] = field(default_factory=list)  # before POST -> finished_at
    dispatch: list[float] = field(default_factory=list)  # created_at -> staging
    staging: list[float] = field(default_factory=list)  # staging -> running (inputs, image id)
    launch: list[float] = field(default_factory=list)  # running -> the command's stamp
    supervisor: list[float] = field(default_factory=list)  # running -> the supervisor's own start
    client: list[float] = field(default_factory=list)  # the supervisor's start -> the command's stamp
    ending: list[float] = field(default_factory=list)  # the stamp -> finished_at
    container_end: list[float] = field(default_factory=list)  # the stamp -> the supervisor's end
    record: list[float] = field(default_factory=list)  # the supervisor's end -> finished_at
    engine_ending: list[float] = field(default_factory=list)  # the stamp -> the client's exit


def engine_start(cli: EngineCLI, s: Starts) -> None:
    t0 = time.time()
    done = engine_call(cli, *STAMP)
    end = time.time()
    stamp = stamps(done.stdout)["started"]
    s.engine_start.append(stamp - t0)
    s.engine_run.append(end - t0)
    s.engine_ending.append(end - stamp)


def labcloud_start(js: JobsServer, c: httpx.Client, s: Starts) -> None:
    t0 = time.time()
    job = succeeded(c, submit(c, START_APP)["id"])
    log = c.get(f"/api/v1/jobs/{job['id']}/logs").text
    stamp = stamps(log).get("started")
    if stamp is None:
        raise RuntimeError(f"job {job['id']}: no stamped line in its log: {log[-500:]}")
    events = c.get(f"/api/v1/jobs/{job['id']}/events").json()
    at = {e["to_state"]: epoch(e["at"]) for e in events}
    finished = epoch(job["finished_at"])
    s.lc_start.append(stamp - t0)
    s.lc_running.append(epoch(job["started_at"]) - t0)
    s.lc_done.append(finished - t0)
    s.dispatch.append(at["staging"] - epoch(job["created_at"]))
    s.staging.append(at["running"] - at["staging"])
    # The supervisor's own times (the attempt's status file stays on the server after the job)
    status = json.loads((js.server.home / "jobs" / job["id"] / "attempt-1" / "status.json").read_text())
    s.launch.append(stamp - at["running"])
    s.supervisor.append(status["started_at"] - at["running"])
    s.client.append(stamp - status["started_at"])
    s.ending.append(finished - stamp)
    s.container_end.append(status["finished_at"] - stamp)
    s.record.append(finished - status["finished_at"])


def start_row(kind: str, backend: str, s: Starts) -> Result:
    engine_start_ms, lc_start_ms = ms(s.engine_start, 50), ms(s.lc_start, 50)
    engine_run_ms, lc_done_ms = ms(s.engine_run, 50), ms(s.lc_done, 50)
    metrics = {
        "n": float(len(s.lc_start)),
        f"{kind}_start_p50_ms": engine_start_ms,
        f"{kind}_start_p90_ms": ms(s.engine_start, 90),
        f"{kind}_run_p50_ms": engine_run_ms,
        f"{kind}_run_p90_ms": ms(s.engine_run, 90),
        "lc_start_p50_ms": lc_start_ms,
        "lc_start_p90_ms": ms(s.lc_start, 90),
        "lc_running_p50_ms": ms(s.lc_running, 50),
        "lc_running_p90_ms": ms(s.lc_running, 90),
        "lc_done_p50_ms": lc_done_ms,
        "lc_done_p90_ms": ms(s.lc_done, 90),
        "ratio_start": round(lc_start_ms / engine_start_ms, 3),
        "ratio_done": round(lc_done_ms / engine_run_ms, 3),
        "lc_dispatch_p50_ms": ms(s.dispatch, 50),
        "lc_staging_p50_ms": ms(s.staging, 50),
        "lc_launch_p50_ms": ms(s.launch, 50),
        "lc_launch_supervisor_p50_ms": ms(s.supervisor, 50),
        "lc_launch_client_p50_ms": ms(s.client, 50),
        "lc_ending_p50_ms": ms(s.ending, 50),
        "lc_ending_container_p50_ms": ms(s.container_end, 50),
        "lc_ending_record_p50_ms": ms(s.record, 50),
        f"{kind}_ending_p50_ms": ms(s.engine_ending, 50),
    }
    notes = (
        f"{len(s.lc_start)} single jobs each, alternating, {IDLE_PAUSE_S:g} s apart; command "
        "`sh -c 'echo started | ts %.s'` (the stamp: when it ran); start: before `run`/POST -> the stamp; "
        f"{kind}_run: -> the client's exit (--rm: removed); lc_running: -> started_at; lc_done: -> "
        "finished_at; phases (p50): dispatch created -> staging, staging -> running (image id), launch "
        "running -> the stamp = supervisor (-> the supervisor's own start) + client (-> the stamp: the "
        "client and the container's start), ending the stamp -> finished_at = container (-> the "
        "supervisor's end: exit, inspect, remove) + record (-> finished_at: outputs, the end recorded)"
    )
    return Result(f"containers: {kind} submit -> running", backend, metrics, START_TARGET, notes)


# ------------------------------------------------------------------------------------------ throughput


def labcloud_round(js: JobsServer, count: int) -> Round:
    """``count`` trivial container jobs submitted at once, up to the last one's finished_at."""
    ids: list[str] = []
    lock = threading.Lock()

    def client(i: int) -> None:
        mine = count // SUBMIT_CLIENTS + (i < count % SUBMIT_CLIENTS)
        with js.client() as wc:
            got = [submit(wc, TRUE_APP)["id"] for _ in range(mine)]
        with lock:
            ids.extend(got)

    cpu0, server0 = busy_cpu_s(), tree_cpu_s(server_pid(js))
    t0 = time.time()
    threaded(SUBMIT_CLIENTS, client)
    with js.client() as c:
        end = max(epoch(succeeded(c, job_id)["finished_at"]) for job_id in ids)
    return Round(count, t0, end, busy_cpu_s() - cpu0, tree_cpu_s(server_pid(js)) - server0)


def engine_round(cli: EngineCLI, count: int) -> Round:
    """``count`` ``<engine> run --rm ... true`` started at once, up to the last client's exit."""
    ends: list[float] = []

    def one(_: int) -> None:
        engine_call(cli, "true")
        ends.append(time.time())

    cpu0, t0 = busy_cpu_s(), time.time()
    threaded(count, one)
    return Round(count, t0, max(ends), busy_cpu_s() - cpu0)


def throughput_row(kind: str, backend: str, lc: list[Round], raw: list[Round]) -> Result:
    count = lc[0].count
    notes = (
        f"{count} `true` jobs at once per round: labcloud's submitted by {SUBMIT_CLIENTS} threads, -> the "
        f"last finished_at; {kind}'s as {count} `{kind} run --rm` started together, -> the last exit; "
        f"{per_round(lc, raw, kind)}; machine_cpu: the whole machine's busy CPU time during a round / N "
        "(the engine's daemons included: meaningful only when other_cpu_pct is low); lc_server_cpu: the "
        "server's process tree (its supervisors and their engine clients included)"
    )
    metrics = throughput_metrics(lc, raw, kind)
    return Result(f"containers: {kind} trivial jobs/s", backend, metrics, THROUGHPUT_TARGET, notes)


# ------------------------------------------------------------------------------------------------- log


@dataclass
class LogLatency:
    browser: list[float] = field(default_factory=list)  # the stamp -> the SSE client
    to_file: list[float] = field(default_factory=list)  # the stamp -> the server's log file
    file_to_browser: list[float] = field(default_factory=list)
    engine: list[float] = field(default_factory=list)  # the stamp -> the engine client's stdout


class FileWatcher:
    """Notes when each stamped line appears in a file (polled every FILE_POLL_S)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.seen: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> FileWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        offset, pending = 0, b""
        while not self._stop.is_set():
            try:
                with open(self.path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read()
            except FileNotFoundError:
                data = b""
            if data:
                now = time.time()
                offset += len(data)
                lines, _, pending = (pending + data).rpartition(b"\n")
                for word in stamps(lines.decode(errors="replace")):
                    self.seen.setdefault(word, now)
            time.sleep(FILE_POLL_S)


def labcloud_log(js: JobsServer, c: httpx.Client, lat: LogLatency) -> None:
    job_id = submit(c, LOG_APP)["id"]
    arrived: dict[str, float] = {}
    written: dict[str, float] = {}
    log_file = js.server.home / "jobs" / job_id / "job.log"
    url = f"/api/v1/jobs/{job_id}/logs"
    with FileWatcher(log_file) as watcher, c.stream("GET", url, params={"follow": "true"}) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            now = time.time()
            if line.startswith("data: ") and (m := STAMPED.match(line[6:])):
                written[m[2]] = float(m[1])
                arrived.setdefault(m[2], now)
    succeeded(c, job_id)
    if len(written) < 2:
        raise RuntimeError(f"job {job_id}: {len(written)} stamped lines reached the SSE client")
    for word, stamp in written.items():
        lat.browser.append(arrived[word] - stamp)
        if word in watcher.seen:
            lat.to_file.append(watcher.seen[word] - stamp)
            lat.file_to_browser.append(arrived[word] - watcher.seen[word])


def engine_log(cli: EngineCLI, lines: int, lat: LogLatency) -> None:
    command = cli.command("run", *run_flags(cli), IMAGE, *log_command(lines))
    with subprocess.Popen(
        command, env=cli.environ(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    ) as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            now = time.time()
            for stamp in stamps(raw.decode(errors="replace")).values():
                lat.engine.append(now - stamp)
        if proc.wait(timeout=JOB_TIMEOUT_S) != 0:
            raise RuntimeError(f"{cli.kind} run exited with {proc.returncode}")


def log_row(kind: str, backend: str, lat: LogLatency, jobs: int) -> Result:
    metrics = {
        "lines": float(len(lat.browser)),
        "p50_ms": ms(lat.browser, 50),
        "p90_ms": ms(lat.browser, 90),
        "max_ms": ms(lat.browser, 100),
        "to_file_p50_ms": ms(lat.to_file, 50),
        "to_file_p90_ms": ms(lat.to_file, 90),
        "file_to_sse_p50_ms": ms(lat.file_to_browser, 50),
        "file_to_sse_p90_ms": ms(lat.file_to_browser, 90),
        f"{kind}_p50_ms": ms(lat.engine, 50),
        f"{kind}_p90_ms": ms(lat.engine, 90),
    }
    notes = (
        f"{jobs} jobs each writing a `ts`-stamped line every ~{LOG_INTERVAL_US // 1000} ms; p50/p90: the "
        "stamp -> the line at an SSE client of /logs?follow=true (from submission); to_file: -> the line in "
        f"the server's job.log (polled every {FILE_POLL_S * 1000:g} ms: engine streaming, supervisor); "
        f"file_to_sse: labcloud's follower; {kind}: the same loop under `{kind} run`, -> its stdout here"
    )
    return Result(f"containers: {kind} log -> browser", backend, metrics, LOG_TARGET, notes)


# ------------------------------------------------------------------------------------------------- run


def measure(kind: str, backend: str, quick: bool) -> list[Result]:
    sizes = QUICK if quick else FULL
    s, lat = Starts(), LogLatency()
    lc_rounds: list[Round] = []
    raw_rounds: list[Round] = []
    with engine(kind) as cli, container_server(backend, cli, sizes) as js, js.client() as c:
        # warm-up: the server finds the engine, both read the image and their own files once
        engine_call(cli, "true")
        succeeded(c, submit(c, TRUE_APP)["id"])
        for _ in range(sizes.start):
            engine_start(cli, s)
            time.sleep(IDLE_PAUSE_S)
            labcloud_start(js, c, s)
            time.sleep(IDLE_PAUSE_S)
        for _ in range(sizes.rounds):
            raw_rounds.append(engine_round(cli, sizes.jobs))
            time.sleep(IDLE_PAUSE_S)
            lc_rounds.append(labcloud_round(js, sizes.jobs))
            time.sleep(IDLE_PAUSE_S)
        for _ in range(sizes.log_jobs):
            engine_log(cli, sizes.log_lines, lat)
            labcloud_log(js, c, lat)
    return [
        start_row(kind, backend, s),
        throughput_row(kind, backend, lc_rounds, raw_rounds),
        log_row(kind, backend, lat, sizes.log_jobs),
    ]


def measure_docker(backend: str, quick: bool) -> list[Result]:
    return measure("docker", backend, quick)


def measure_podman(backend: str, quick: bool) -> list[Result]:
    return measure("podman", backend, quick)


MEASUREMENTS: dict[str, Callable[[str, bool], list[Result]]] = {
    "docker": measure_docker,
    "podman": measure_podman,
}


def run(backends: list[str], quick: bool = False) -> list[Result]:
    return run_all("containers", MEASUREMENTS, TARGETS, backends[:1], quick)
