"""Path: the calls one job makes through labcloud's layers, from submit to ``succeeded``.

A trivial job (``sleep 0.2``: short, but still running when the runner first looks) is submitted to a
server in this process (FastAPI's TestClient over :func:`labcloud.api.app.create_app`, settings in a
temporary home, defaults otherwise) and followed until it succeeded, while a profile hook
(``sys.setprofile`` and ``threading.setprofile``, installed before the server starts so that every thread
has it) records the calls of functions in modules under ``labcloud.``. Only the server's Python is
measured: the job runs under a supervisor subprocess. A first job, not recorded, warms the server up;
then ``RUNS`` jobs (``--quick``: one) are recorded one at a time, and the run with the median number of
stops is reported (``stops_min``, ``stops_max``: the range). ``bench/results/path-*.json`` lists every
stop of the reported runs, in order.

Paths
  ``local``         the local executor: the server runs the job.
  ``pull: server``  the pull executor: the server's side of the same job, run by a pull worker.
  ``pull: worker``  that worker's side. The worker is ``labcloud worker``'s own agent
                    (:class:`~labcloud.worker.agent.WorkerAgent`) run in this process on its own threads,
                    its HTTP calls going to the same TestClient instead of over TCP, so that both sides
                    are measured, apart, in one process. As a running worker does, it already waits in a
                    long-polling claim when the job is submitted.

What is recorded (everything else is left out)
  - Requests, each a segment of its own whichever threads serve it: ``POST /api/v1/jobs``; on the pull
    path also the claim that returned the job (from the submit on: it was already waiting) and the job's
    own worker calls (start, log, progress, outputs, finish). Left out: heartbeats, claims that found
    nothing, the client's requests (logging in, polling the job's state).
  - Local: the dispatcher's round (one ``Scheduler.step``, whole) that admitted the job, and the job's
    thread (``job-<id>``) from its start to its end. Left out: the dispatcher's other rounds (also the
    one the job's end wakes), leadership, housekeeping, the wake-ups listener.
  - Worker: the claimer handing the job to a ``JobRun`` (``WorkerAgent._start``), the job's thread, the
    log shipper's rounds that sent something, progress reports sent. Left out: heartbeats, idle shipper
    rounds, the agent's start and stop.
  - The app registry is not checked for changed files within the path (``apps_check_interval_s`` is an
    hour: a check scans the apps folder on a clock, whatever the job).

Definitions
  call     a labcloud function starting; a generator or coroutine resumed after ``yield``/``await`` is
           not a new call. Property reads and dataclass constructors are calls.
  unit     the function's module.
  layer    of a unit, from the top (:data:`LAYERS`, as docs/architecture.md orders them): http
           (``api.*``, ``web.*``, ``http.*``, ``request_scope``), runtime, executors
           (``execution.executors.*``, ``scheduler``, ``leader``, ``loops``, ``wakeups``; on a worker
           ``worker.agent`` and ``JobRun``), services (``services.*``), runner (``execution.runner``,
           ``run_end``, ``attempt``, ``process``, ``watch``, ``sandbox``, ``supervise``, ``container_job``,
           ``containers``...), reporter (``execution.db_reporter``, ``worker.http_reporter``,
           ``worker.logship``).
           The rest is support (``db``, ``settings``, ``registry``, ``storage``, ``errors``,
           ``security``, ``worker.api``...). A module without a layer stops the bench.
  caller   of a call: the innermost enclosing layered frame on the same thread and in the same segment,
           looking through support frames and non-labcloud ones (SQLAlchemy, FastAPI, the standard
           library). A call without one (a segment's first; a function FastAPI runs in its thread pool;
           a callback the event loop runs) has no caller, and its segment's previous layered call as
           its predecessor.
  stop     a layered call whose unit differs from its caller's (or, without a caller, its
           predecessor's); a segment's first call is one. Support calls are not counted.
           ``stops_with_support`` counts the same over every unit.
  modules  distinct modules of the layered calls (``modules_with_support``: of all calls).
  climb    a call into a higher layer than its caller's, made by the caller's own code: not through a
           library calling labcloud on its behalf (SQLAlchemy converting a column with a type defined in
           ``services``). Returns are not climbs. Listed as ``caller unit -> callee unit (function)``.
  local.py stops, over every unit, into ``execution/executors/local.py`` from outside that file.
  rounds   the runner follows a job by polling (``watch.watch`` reads the result every 50 ms, so a
           longer job makes more rounds of the same calls). Only the first round is counted; ``rounds``
           says how many there were and ``stops_raw`` counts them all.

Variation: the local path's counts repeat exactly from run to run. On the pull server one stop comes and
goes: the submit's wake-up reaching the waiting claim (``wakeups._resolve``, run by the event loop in
the submit's context) is missing when the worker's previous claim timed out just then and a new one
found the job at once.

The layering rule the local path keeps (:func:`layering_breaks`; tests/test_bench_path.py)
  Every climb on the local path is made by the reporter (``DatabaseReporter``: the runner's one way back
  up, into the services), or is one of the climbs named in :data:`ALLOWED_CLIMBS`, each with why. Any
  other climb breaks the rule.
"""

from __future__ import annotations

import dis
import itertools
import json
import re
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import CodeType, FrameType
from typing import Any

import httpx

from bench.harness import Result, database, run_all

HTTP, RUNTIME, SERVICES, EXECUTORS, RUNNER, REPORTER = (
    "http",
    "runtime",
    "services",
    "executors",
    "runner",
    "reporter",
)
SUPPORT = "support"
RANK = {HTTP: 0, RUNTIME: 1, EXECUTORS: 2, SERVICES: 3, RUNNER: 4, REPORTER: 5}  # 0 is the top
LOCAL_PY = "labcloud.execution.executors.local"
# A unit's layer: the longest prefix that matches it (the whole name, or followed by "." or ":").
LAYERS: dict[str, str] = {
    "labcloud.api": HTTP,
    "labcloud.web": HTTP,
    "labcloud.http": HTTP,
    "labcloud.request_scope": HTTP,
    "labcloud.runtime": RUNTIME,
    "labcloud.services": SERVICES,
    "labcloud.execution.executors": EXECUTORS,
    "labcloud.execution.scheduler": EXECUTORS,
    "labcloud.execution.leader": EXECUTORS,
    "labcloud.execution.loops": EXECUTORS,
    "labcloud.execution.wakeups": EXECUTORS,
    "labcloud.worker.agent": EXECUTORS,
    "labcloud.worker.telemetry": EXECUTORS,
    "labcloud.worker.job": EXECUTORS,
    "labcloud.worker.single": EXECUTORS,
    "labcloud.worker.runjob": EXECUTORS,
    "labcloud.worker.celery_app": EXECUTORS,
    "labcloud.worker.resume": EXECUTORS,
    "labcloud.execution.runner": RUNNER,
    "labcloud.execution.attempt": RUNNER,
    "labcloud.execution.process": RUNNER,
    "labcloud.execution.watch": RUNNER,
    "labcloud.execution.sandbox": RUNNER,
    "labcloud.execution.host_view": RUNNER,
    "labcloud.execution.supervise": RUNNER,
    "labcloud.execution.container_job": RUNNER,
    "labcloud.execution.containers": RUNNER,
    "labcloud.execution.container_run": RUNNER,
    "labcloud.execution.engine_probe": RUNNER,
    "labcloud.execution.run_end": RUNNER,
    "labcloud.execution.db_reporter": REPORTER,
    "labcloud.worker.http_reporter": REPORTER,
    "labcloud.worker.logship": REPORTER,
    "labcloud.worker.api": SUPPORT,
    "labcloud.worker.workdir": SUPPORT,
    "labcloud.worker.record": SUPPORT,
    "labcloud.worker.config": SUPPORT,
    "labcloud.db": SUPPORT,
    "labcloud.settings": SUPPORT,
    "labcloud.registry": SUPPORT,
    "labcloud.storage": SUPPORT,
    "labcloud.errors": SUPPORT,
    "labcloud.protocol": SUPPORT,  # what both ends of the worker protocol name (a server's features)
    "labcloud.security": SUPPORT,
    "labcloud.ratelimit": SUPPORT,
    "labcloud.cli": SUPPORT,
    # Metrics and logs: observed from every layer (a state change counted where it commits), like the
    # database; the request middleware is part of the HTTP layer.
    "labcloud.telemetry": SUPPORT,
    "labcloud.telemetry.asgi": HTTP,
}
# The climbs the local path makes besides the reporter's: (caller unit, callee unit, function) -> why.
# Both are callables the runtime hands down (the architecture says so); the rule allows these and no others,
# so that a new one is noticed.
ALLOWED_CLIMBS: dict[tuple[str, str, str], str] = {
    (LOCAL_PY, "labcloud.runtime", "Runtime.notify"): (
        "the job's thread ended, room for the next: the notify callable the runtime hands every executor"
    ),
    ("labcloud.services.jobs", "labcloud.runtime", "Runtime.ceiling"): (
        "the largest job the executor can run: the ceiling callable the runtime hands to submit"
    ),
}
RUNS, RUNS_QUICK = 3, 1
TARGETS = {
    "local": "every climb made by the reporter or allowed (layering_breaks=0)",
    "pull": "the worker's news reach the server only over HTTP",
}
APP = """\
name: path-sleep
title: Path sleep
description: Sleeps 0.2 s.
versions:
  "1.0":
    entrypoints:
      run:
        command: ["sleep", "0.2"]
        resources: {cpus: 0.01, memory_mb: 16, gpus: 0, timeout_s: 60}
"""
ADMIN_EMAIL = "path-admin@example.org"
ADMIN_PASSWORD = "path-admin-password"
RESULTS = Path(__file__).parent / "results"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def module_of(unit: str) -> str:
    return unit.split(":", 1)[0]


def layer_of(unit: str) -> str:
    best = ""
    for prefix in LAYERS:
        if (unit == prefix or unit.startswith((prefix + ".", prefix + ":"))) and len(prefix) > len(best):
            best = prefix
    if not best:
        raise KeyError(f"{unit}: no layer in bench.bench_path.LAYERS")
    return LAYERS[best]


def _short(unit: str) -> str:
    return unit.removeprefix("labcloud.")


# ----------------------------------------------------------------------------------------- recording


@dataclass
class Call:
    seq: int
    unit: str
    func: str  # qualified name; a dataclass's generated methods are named after their class
    # The enclosing labcloud frames in the segment, innermost first: (unit, True when only labcloud frames
    # lie between it and this call, i.e. its own code made the call, not a library on its behalf).
    callers: tuple[tuple[str, bool], ...]


@dataclass
class Segment:
    """Calls that belong together: one HTTP request, one thread, or one round of a thread's loop."""

    id: int
    side: str  # "server" or "worker"
    what: str  # a request's "METHOD /path", else what the thread does
    request: bool = False
    keep: bool = False  # on the path (requests are chosen afterwards, by what they were and answered)
    status: int | None = None  # a request's answer
    calls: list[Call] = field(default_factory=list)


Keep = Callable[[Segment, Any], bool]


@dataclass
class Steps:
    """A thread whose calls to one of ``roots`` ((module, qualname) -> keep) each make a segment that ends
    when the call returns; ``keep(segment, returned)`` says whether it is on the path."""

    side: str
    what: str
    roots: dict[tuple[str, str], Keep]


@dataclass
class Whole:
    """A thread whose every labcloud call is on the path."""

    side: str
    what: str


@dataclass
class _ThreadState:
    rule: Steps | Whole | None
    segment: Segment | None = None
    root: FrameType | None = None  # the call of a Steps root that the segment ends with
    keep: Keep | None = None


_REQUEST: ContextVar[Segment | None] = ContextVar("bench_path_request", default=None)
_GENERATOR_FLAGS = 0x20 | 0x80 | 0x100 | 0x200  # generator, coroutine, iterable coroutine, async generator
_first_resume: dict[CodeType, int] = {}


def _fresh(frame: FrameType) -> bool:
    """A function starting, not a generator or coroutine resumed after a yield or await."""
    code = frame.f_code
    if not code.co_flags & _GENERATOR_FLAGS:
        return True
    first = _first_resume.get(code)
    if first is None:
        first = next((i.offset for i in dis.get_instructions(code) if i.opname == "RESUME"), 0)
        _first_resume[code] = first
    return frame.f_lasti <= first


def _labcloud(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith("labcloud.")


def unit_of(frame: FrameType) -> str:
    """A function's unit: its module."""
    return str(frame.f_globals.get("__name__", ""))


def _func(frame: FrameType) -> str:
    code = frame.f_code
    if code.co_qualname.startswith("__create_fn__.") and "self" in frame.f_locals:
        return f"{type(frame.f_locals['self']).__qualname__}.{code.co_name}"
    return code.co_qualname


class Recorder:
    """Records calls into labcloud while :attr:`armed`: in requests (tagged by :class:`TaggedRequests`)
    and on the threads a rule in ``threads`` (matched by the thread's name) names."""

    def __init__(self, threads: list[tuple[Callable[[str], bool], Steps | Whole]]) -> None:
        self.threads = threads
        self.armed = False
        self.segments: list[Segment] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._states: list[_ThreadState] = []

    @contextmanager
    def installed(self) -> Iterator[Recorder]:
        """The hook on this thread and on every thread started meanwhile (nothing is recorded unarmed)."""
        sys.setprofile(self._hook)
        threading.setprofile(self._hook)
        try:
            yield self
        finally:
            self.armed = False
            threading.setprofile(None)  # type: ignore[arg-type]
            sys.setprofile(None)

    @contextmanager
    def recording(self) -> Iterator[None]:
        """Record afresh: what was recorded before is forgotten, except requests still being served
        (a worker's waiting claim), whose calls from now on are recorded."""
        with self._lock:
            self.segments = [s for s in self.segments if s.request and s.status is None]
            for segment in self.segments:
                segment.calls = []
            for state in self._states:  # a loop's round in progress, a thread of an earlier job
                state.segment = state.root = state.keep = None
                if isinstance(state.rule, Whole):
                    state.rule = None
        self.armed = True
        try:
            yield
        finally:
            self.armed = False

    def segment(self, side: str, what: str, *, keep: bool = False, request: bool = False) -> Segment:
        with self._lock:
            segment = Segment(len(self.segments), side, what, request, keep)
            self.segments.append(segment)
        return segment

    # -------------------------------------------------------------------------------------- the hook

    def _hook(self, frame: FrameType, event: str, arg: Any) -> None:
        if not self.armed:
            return
        if event == "call":
            if _labcloud(frame) and _fresh(frame):
                self._call(frame)
        elif event == "return":
            state: _ThreadState | None = getattr(self._local, "state", None)
            if state is not None and state.root is frame:
                assert state.segment is not None and state.keep is not None
                state.segment.keep = bool(state.keep(state.segment, arg))
                state.segment = state.root = state.keep = None

    def _state(self) -> _ThreadState:
        state: _ThreadState | None = getattr(self._local, "state", None)
        if state is None:
            name = threading.current_thread().name
            state = _ThreadState(next((rule for match, rule in self.threads if match(name)), None))
            if isinstance(state.rule, Whole):
                state.segment = self.segment(state.rule.side, state.rule.what, keep=True)
            self._local.state = state
            with self._lock:
                self._states.append(state)
        return state

    def _call(self, frame: FrameType) -> None:
        segment = _REQUEST.get()
        root = None
        if segment is None:
            state = self._state()
            if state.rule is None:
                return
            if isinstance(state.rule, Steps) and state.segment is None:
                key = (str(frame.f_globals["__name__"]), frame.f_code.co_qualname)
                keep = state.rule.roots.get(key)
                if keep is None:
                    return
                state.segment = self.segment(state.rule.side, f"{state.rule.what}: {key[1]}")
                state.root, state.keep = frame, keep
                state.segment.calls.append(Call(next(self._seq), unit_of(frame), _func(frame), ()))
                return
            segment, root = state.segment, state.root
        assert segment is not None
        callers = []
        direct = True
        back = frame.f_back
        while back is not None:
            if _labcloud(back):
                callers.append((unit_of(back), direct))
            else:
                direct = False
            if back is root:
                break
            back = back.f_back
        segment.calls.append(Call(next(self._seq), unit_of(frame), _func(frame), tuple(callers)))


class TaggedRequests:
    """ASGI: each HTTP request is a segment of its own, whichever threads serve it."""

    def __init__(self, app: Any, recorder: Recorder) -> None:
        self.app = app
        self.recorder = recorder

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        segment = self.recorder.segment("server", f"{scope['method']} {scope['path']}", request=True)

        async def tell(message: Any) -> None:
            if message["type"] == "http.response.start":
                segment.status = message["status"]
            await send(message)

        token = _REQUEST.set(segment)
        try:
            await self.app(scope, receive, tell)
        finally:
            _REQUEST.reset(token)


# ------------------------------------------------------------------------------------------ analysis


@dataclass(frozen=True)
class Climb:
    caller: str
    callee: str
    func: str

    def __str__(self) -> str:
        return f"{_short(self.caller)} -> {_short(self.callee)} ({self.func})"


@dataclass
class PathStats:
    path: str
    stops: int
    modules: int
    climbs: list[Climb]
    local_py: int
    stops_with_support: int
    modules_with_support: int
    stops_raw: int
    rounds: int
    segments: list[tuple[str, int]]  # (what, stops)
    sequence: list[str]  # every stop: "predecessor unit -> unit.function"

    def climb_counts(self) -> Counter[str]:
        return Counter(str(c) for c in self.climbs)


def _first_round_only(calls: list[Call]) -> tuple[list[Call], int]:
    """The calls without ``watch.watch``'s polling rounds after its first, and how many rounds there were
    (a round runs from one of its ``process.read_result`` calls to the next; the last call finds the
    result and starts no round)."""
    starts = [
        i
        for i, c in enumerate(calls)
        if c.unit == "labcloud.execution.process"
        and c.func == "read_result"
        and c.callers[:1] == (("labcloud.execution.watch", True),)
    ]
    if len(starts) < 3:
        return calls, max(0, len(starts) - 1)
    return calls[: starts[1]] + calls[starts[-1] :], len(starts) - 1


def _walk(calls: list[Call], layered: bool) -> Iterator[tuple[Call, tuple[str, bool] | None, str | None]]:
    """(call, its caller (unit, direct) or None, the unit it is entered from or None) for each call
    counted: the layered ones, or all."""
    previous: str | None = None
    for call in calls:
        if layered and layer_of(call.unit) == SUPPORT:
            continue
        callers = [c for c in call.callers if not layered or layer_of(c[0]) != SUPPORT]
        caller = callers[0] if callers else None
        yield call, caller, caller[0] if caller is not None else previous
        previous = call.unit


def _stops(calls: list[Call], layered: bool) -> int:
    return sum(1 for call, _, entered_from in _walk(calls, layered) if call.unit != entered_from)


def analyse(path: str, segments: list[Segment]) -> PathStats:
    """Count a path's segments (in the order they began) by the module docstring's definitions."""
    stops = stops_all = stops_raw = local_py = rounds = 0
    modules: set[str] = set()
    modules_all: set[str] = set()
    climbs: list[Climb] = []
    per_segment: list[tuple[str, int]] = []
    sequence: list[str] = []
    for segment in sorted((s for s in segments if s.calls), key=lambda s: s.calls[0].seq):
        calls, n = _first_round_only(segment.calls)
        rounds += n
        here = 0
        for call, caller, entered_from in _walk(calls, layered=True):
            modules.add(module_of(call.unit))
            if call.unit != entered_from:
                here += 1
                origin = _short(entered_from) if entered_from else f"({segment.what})"
                sequence.append(f"{origin} -> {_short(call.unit)}.{call.func}")
            if caller is not None and caller[1] and RANK[layer_of(call.unit)] < RANK[layer_of(caller[0])]:
                climbs.append(Climb(caller[0], call.unit, call.func))
        stops += here
        per_segment.append((segment.what, here))
        for call, _, entered_from in _walk(calls, layered=False):
            modules_all.add(module_of(call.unit))
            if call.unit != entered_from:
                stops_all += 1
                local_py += module_of(call.unit) == LOCAL_PY and module_of(entered_from or "") != LOCAL_PY
        stops_raw += _stops(segment.calls, layered=True)
    return PathStats(
        path=path,
        stops=stops,
        modules=len(modules),
        climbs=climbs,
        local_py=local_py,
        stops_with_support=stops_all,
        modules_with_support=len(modules_all),
        stops_raw=stops_raw,
        rounds=rounds,
        segments=per_segment,
        sequence=sequence,
    )


def layering_breaks(stats: PathStats) -> list[Climb]:
    """The climbs that break the local path's layering rule: not made by the reporter, not allowed."""
    return [
        c
        for c in stats.climbs
        if layer_of(c.caller) != REPORTER and (c.caller, c.callee, c.func) not in ALLOWED_CLIMBS
    ]


# ---------------------------------------------------------------------------------------- the server


@dataclass
class _Server:
    client: Any  # fastapi.testclient.TestClient
    headers: dict[str, str]  # an admin's
    runtime: Any  # labcloud.runtime.Runtime


@contextmanager
def _server(recorder: Recorder, home: Path, database_url: str, executor: str) -> Iterator[_Server]:
    """The app on a TestClient, the recorder's hook installed before it starts, and an admin logged in."""
    from fastapi.testclient import TestClient

    from labcloud.api.app import create_app
    from labcloud.db import migrate
    from labcloud.settings import Settings

    (home / "apps").mkdir(parents=True, exist_ok=True)
    (home / "apps" / "path-sleep.yaml").write_text(APP)
    settings = Settings(
        home=home,
        database_url=database_url,
        executor=executor,
        secret_key="bench-path-" + "0" * 32,
        initial_admin_email=ADMIN_EMAIL,
        initial_admin_password=ADMIN_PASSWORD,
        apps_check_interval_s=3600,
    )
    if database_url:  # PostgreSQL is migrated explicitly (SQLite on start)
        migrate.upgrade(settings)
    app = create_app(settings)
    with recorder.installed(), TestClient(TaggedRequests(app, recorder)) as client:
        r = client.post("/api/v1/auth/login", data={"username": ADMIN_EMAIL, "password": ADMIN_PASSWORD})
        r.raise_for_status()
        yield _Server(client, {"Authorization": f"Bearer {r.json()['access_token']}"}, app.state.ctx)


def _one_job(server: _Server, threads: Callable[[str], list[str]]) -> str:
    """Submit the trivial job; return its id once it succeeded and its threads (named from its id) ended."""
    r = server.client.post("/api/v1/jobs", json={"app": "path-sleep"}, headers=server.headers)
    r.raise_for_status()
    job_id: str = r.json()["id"]
    deadline = time.monotonic() + 120
    while True:
        state = server.client.get(f"/api/v1/jobs/{job_id}", headers=server.headers).json()["state"]
        if state == "succeeded":
            break
        if state in ("failed", "cancelled") or time.monotonic() > deadline:
            raise RuntimeError(f"the path's job ended {state}")
        time.sleep(0.01)
    names = set(threads(job_id))
    for thread in threading.enumerate():
        if thread.name in names:
            thread.join(30)
    return job_id


def _request(segment: Segment, method: str, path: str, status: int | None = None) -> bool:
    """A request ``method`` to ``path`` (a prefix when it ends with "/") answered ``status`` (any < 400)."""
    got_method, _, got_path = segment.what.partition(" ")
    return (
        segment.request
        and got_method == method
        and (got_path.startswith(path) if path.endswith("/") else got_path == path)
        and (segment.status == status if status is not None else (segment.status or 500) < 400)
    )


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.01)


# ------------------------------------------------------------------------------------------- local


def measure_local(database_url: str = "", runs: int = 1) -> list[list[PathStats]]:
    """The local path, ``runs`` times after a warm-up job: one [stats] per run."""

    def admitted(segment: Segment, _returned: Any) -> bool:
        return any(c.func.endswith(".admit") and layer_of(c.unit) == EXECUTORS for c in segment.calls)

    recorder = Recorder(
        [
            (
                lambda name: name == "labcloud-dispatch-local",
                Steps("server", "dispatch", {("labcloud.execution.scheduler", "Scheduler.step"): admitted}),
            ),
            (lambda name: name.startswith("job-"), Whole("server", "job thread")),
        ]
    )
    results = []
    with (
        tempfile.TemporaryDirectory(prefix="labcloud-bench-path-") as tmp,
        _server(recorder, Path(tmp) / "home", database_url, "local") as server,
    ):

        def job_threads(job_id: str) -> list[str]:
            return [f"job-{job_id}"]

        _one_job(server, job_threads)
        for _ in range(runs):
            with recorder.recording():
                _one_job(server, job_threads)
            path = [
                s
                for s in recorder.segments
                if (s.keep and not s.request) or _request(s, "POST", "/api/v1/jobs", 201)
            ]
            results.append([analyse("local", path)])
    return results


# -------------------------------------------------------------------------------------------- pull


class _Borrowed(httpx.BaseTransport):
    """The TestClient's transport lent to the worker, whose closing its client must not close it."""

    def __init__(self, transport: httpx.BaseTransport) -> None:
        self.transport = transport

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        return self.transport.handle_request(request)


def measure_pull(database_url: str = "", runs: int = 1) -> list[list[PathStats]]:
    """The same job on a pull worker, ``runs`` times after a warm-up job: [server, worker] per run."""
    from labcloud.worker.agent import WorkerAgent
    from labcloud.worker.api import WorkerApi
    from labcloud.worker.config import WorkerConfig

    def sent(segment: Segment, _returned: Any) -> bool:
        return any(c.func == "JobRun._send_log" for c in segment.calls)

    def always(_segment: Segment, _returned: Any) -> bool:
        return True

    recorder = Recorder(
        [
            (lambda name: name.startswith("job-"), Whole("worker", "job thread")),
            (
                lambda name: name.startswith("log-"),
                Steps(
                    "worker", "log shipper", {("labcloud.worker.logship", "LogShipper._ship_available"): sent}
                ),
            ),
            (
                lambda name: name.startswith("progress-"),
                Steps("worker", "progress", {("labcloud.worker.job", "JobRun._send_progress"): always}),
            ),
            (
                lambda name: name == "claim",
                Steps("worker", "claimer", {("labcloud.worker.agent", "WorkerAgent._start"): always}),
            ),
        ]
    )

    def job_threads(job_id: str) -> list[str]:
        return [f"{kind}-{job_id[:8]}" for kind in ("job", "log", "progress")]

    results = []
    with (
        tempfile.TemporaryDirectory(prefix="labcloud-bench-path-") as tmp,
        _server(recorder, Path(tmp) / "home", database_url, "pull") as server,
    ):
        r = server.client.post("/api/v1/workers", json={"name": "path-worker"}, headers=server.headers)
        r.raise_for_status()
        worker_id, token = r.json()["id"], r.json()["token"]
        config = WorkerConfig(
            server="http://testserver",
            token=token,
            cpus=1,
            memory_mb=1024,
            work_dir=Path(tmp) / "worker",
            claim_wait_s=20,
            kill_grace_s=1,
        )
        agent = WorkerAgent(config)
        agent.api.close()
        agent.api = WorkerApi(config.server, transport=_Borrowed(server.client._transport))
        main = threading.Thread(target=agent.run, name="worker-agent", daemon=True)
        main.start()
        waiting = server.runtime.waker._waiters  # the claims waiting for work
        try:
            _one_job(server, job_threads)
            for _ in range(runs):
                _wait_for(lambda: len(waiting) == 1, "the worker's claim to wait")
                with recorder.recording():
                    job_id = _one_job(server, job_threads)
                on_server = [
                    s
                    for s in recorder.segments
                    if _request(s, "POST", "/api/v1/jobs", 201)
                    or _request(s, "POST", "/api/v1/worker/claim", 200)
                    or (
                        (
                            _request(s, "POST", f"/api/v1/worker/jobs/{job_id}/")
                            or _request(s, "PUT", f"/api/v1/worker/jobs/{job_id}/")
                        )
                        and not s.what.endswith("/heartbeat")
                    )
                ]
                on_worker = [s for s in recorder.segments if s.side == "worker" and s.keep]
                results.append([analyse("pull: server", on_server), analyse("pull: worker", on_worker)])
        finally:  # revoking the worker ends the claim it waits in at once
            agent.stop()
            server.client.post(f"/api/v1/workers/{worker_id}/revoke", headers=server.headers)
            for thread in [main, *agent._threads]:
                thread.join(30)
    return results


# ------------------------------------------------------------------------------------------ the bench


def _median(runs: list[list[PathStats]]) -> list[PathStats]:
    """The run whose first path has the median number of stops."""
    return sorted(runs, key=lambda run: run[0].stops)[len(runs) // 2]


def _row(stats: PathStats, backend: str, runs: list[PathStats], target: str) -> Result:
    stops = [r.stops for r in runs]
    metrics = {
        "stops": float(stats.stops),
        "modules": float(stats.modules),
        "climbs": float(len(stats.climbs)),
        "local_py_entries": float(stats.local_py),
        "stops_with_support": float(stats.stops_with_support),
        "modules_with_support": float(stats.modules_with_support),
        "stops_raw": float(stats.stops_raw),
        "rounds": float(stats.rounds),
        "runs": float(len(runs)),
        "stops_min": float(min(stops)),
        "stops_max": float(max(stops)),
    }
    if stats.path == "local":
        metrics["layering_breaks"] = float(len(layering_breaks(stats)))
    climbs = "; ".join(f"{c} x{n}" if n > 1 else c for c, n in sorted(stats.climb_counts().items()))
    segments = ", ".join(
        f"{_UUID.sub('{id}', what.replace('/api/v1', ''))}={n}" for what, n in stats.segments
    )
    notes = f"climbs: {climbs or 'none'}; stops per segment: {segments}"
    return Result(f"path: {stats.path}", backend, metrics, target, notes)


def _measure(which: str) -> Callable[[str, bool], list[Result]]:
    def measure(backend: str, quick: bool) -> list[Result]:
        runs = RUNS_QUICK if quick else RUNS
        with database(backend) as url:
            measured = (measure_local if which == "local" else measure_pull)(url, runs)
        chosen = _median(measured)
        _print(chosen, backend)
        _write_trace(chosen, backend)
        return [
            _row(stats, backend, [run[i] for run in measured], TARGETS[which])
            for i, stats in enumerate(chosen)
        ]

    return measure


def _print(paths: list[PathStats], backend: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"a job's path from submit to succeeded ({backend})")
    for col in ("path", "stops", "modules", "climbs", "local.py entries", "with support", "rounds"):
        table.add_column(col)
    for p in paths:
        table.add_row(
            p.path,
            str(p.stops),
            str(p.modules),
            str(len(p.climbs)),
            str(p.local_py),
            f"{p.stops_with_support} stops, {p.modules_with_support} modules",
            str(p.rounds),
        )
    console = Console(width=160)
    console.print(table)
    for p in paths:
        for climb, n in sorted(p.climb_counts().items()):
            console.print(f"  {p.path}: climb {climb}" + (f" x{n}" if n > 1 else ""), highlight=False)


def _write_trace(paths: list[PathStats], backend: str) -> None:
    """Every stop of each path, in order, beside the bench's JSON: what the counts count."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = paths[0].path.split(":")[0]
    data = [asdict(p) | {"climbs": [str(c) for c in p.climbs]} for p in paths]
    (RESULTS / f"path-{name}-{backend}.json").write_text(json.dumps(data, indent=2))


MEASUREMENTS = {"local": _measure("local"), "pull": _measure("pull")}


def run(backends: list[str], quick: bool = False) -> list[Result]:
    return run_all("path", MEASUREMENTS, TARGETS, backends, quick)
