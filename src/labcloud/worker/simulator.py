"""Simulated instruments: many devices in one process, each a pull worker of its own (a worker token, a
heartbeat with telemetry and an instrument ``status``, claims), which "record" the jobs they take.

What for: trying a server with a fleet of rigs before the rigs exist, load tests (``bench/bench_devices.py``),
and tests that need devices which vanish and come back (:meth:`Simulation.kill`, :meth:`Simulation.pause`).

All devices share one asyncio loop, so hundreds fit in one process. Each has its own ``httpx.AsyncClient``
with a few keep-alive connections (one for its long-polling claim), as a real device has its own: one client
shared by hundreds of waiting claims would make them wait for each other, and costs httpcore time quadratic in
the number of requests in its pool. Each speaks the worker protocol (``docs/worker-protocol.md``) as
:class:`labcloud.worker.Device` does, with the same errors and retry rules (:mod:`labcloud.worker.api`). A job
it takes it records for its ``duration_s`` parameter (else :attr:`SimSettings.duration_s`): a log line and a
progress report every :attr:`SimSettings.step_s`, then an output ``<prefix>.txt`` (the job's ``prefix``
parameter, else the device's name) of a few lines, then the end: succeeded, or failed at
:attr:`SimSettings.fail_rate`. A cancel (from a heartbeat's answer or a progress report's) stops the recording
and ends the job as cancelled; an abort (the lease ran out, another attempt has the job) drops it without a
word more.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import random
import statistics
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from labcloud import __version__
from labcloud.worker.api import (
    API,
    FENCED_TYPE,
    KEEP_ALIVE_S,
    RETRY_STATUSES,
    Backoff,
    Fenced,
    TokenRejected,
    Unreachable,
    WorkerApiError,
    bearer,
    describe,
    problem_detail,
    quote_path,
)

log = logging.getLogger(__name__)

MAX_CLAIM_WAIT_S = 30.0
DEFAULT_INTERVAL_S = 5.0  # until the server's first answer says otherwise
DEVICE_CONNECTIONS = 3  # a device's: its waiting claim, its heartbeats, its job's reports


@dataclass
class SimSettings:
    """How the simulated devices behave."""

    heartbeat_s: float | None = None  # None: as often as the server asks
    claims: bool = True  # False: heartbeats only (a fleet that takes no jobs)
    claim_wait_s: float = MAX_CLAIM_WAIT_S  # how long each claim waits for a job (long poll)
    stagger_s: float | None = None  # first heartbeats spread over this (None: one heartbeat period)
    duration_s: float = 3.0  # a recording's length when the job's ``duration_s`` does not say
    step_s: float = 1.0  # a log line and a progress report this often while recording
    fail_rate: float = 0.0  # the share of recordings that fail
    capacity: dict[str, float] = field(
        default_factory=lambda: {"cpus": 4.0, "memory_mb": 8192.0, "gpus": 0.0}
    )
    seed: int | None = None


@dataclass
class Stats:
    """What the fleet did so far (counters since the start; latencies since :meth:`reset_latencies`)."""

    heartbeats: int = 0
    heartbeat_failures: int = 0
    claims: int = 0
    taken: int = 0
    succeeded: int = 0
    failed: int = 0
    cancelled: int = 0
    aborted: int = 0  # taken back by the server (fenced)
    errors: int = 0  # jobs dropped after an answer the simulator did not expect
    heartbeat_latency_s: list[float] = field(default_factory=list)

    def reset_latencies(self) -> None:
        self.heartbeat_latency_s = []

    def summary(self) -> dict[str, float]:
        ms = sorted(x * 1000 for x in self.heartbeat_latency_s)
        out: dict[str, float] = {
            k: float(v) for k, v in vars(self).items() if isinstance(v, int) and not isinstance(v, bool)
        }
        if ms:
            out |= {
                "heartbeat_p50_ms": round(statistics.median(ms), 2),
                "heartbeat_p95_ms": round(ms[min(len(ms) - 1, round(0.95 * (len(ms) - 1)))], 2),
                "heartbeat_max_ms": round(ms[-1], 2),
            }
        return out


class SimulatorError(Exception):
    """The simulation cannot start (registration refused, a token file unreadable)."""


# ------------------------------------------------------------------------------------------ the wire


class Wire:
    """The worker protocol over an ``httpx.AsyncClient``, with the rules of
    :meth:`labcloud.worker.api.WorkerApi.call`: retries with backoff on network failures and "try again"
    answers; 409 ``fenced`` and a job call's 401 raise :class:`Fenced`, a worker call's 401
    :class:`TokenRejected`, other 4xx :class:`WorkerApiError`."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    async def call(
        self,
        method: str,
        path: str,
        *,
        token: str,
        job_call: bool = False,
        tries: int | None = None,
        accept: Iterable[int] = (),
        timeout: float | None = None,
        json: Any = None,
        content: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        accepted = frozenset(accept)
        backoff = Backoff()
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self.client.request(
                    method,
                    API + path,
                    json=json,
                    content=content,
                    headers={**bearer(token), **(headers or {})},
                    timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                )
            except httpx.TransportError as exc:
                problem = describe(exc)
            else:
                status = response.status_code
                if status < 400:
                    return response
                kind, detail = problem_detail(response)
                if status == 409 and kind.endswith(FENCED_TYPE):
                    raise Fenced(status, detail)
                if status in accepted:
                    return response
                if status == 401:
                    raise (Fenced if job_call else TokenRejected)(status, detail)
                if status not in RETRY_STATUSES:
                    raise WorkerApiError(status, detail)
                problem = f"{status} {detail}".strip()
            if tries is not None and attempt >= tries:
                raise Unreachable(0, f"{method} {path}: {problem}")
            await asyncio.sleep(backoff.next())


# ------------------------------------------------------------------------------------------ one device


@dataclass
class SimJob:
    assignment: dict[str, Any]
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    log: bytearray = field(default_factory=bytearray)
    sent: int = 0  # how much of the log the server has
    task: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return str(self.assignment["id"])

    @property
    def attempt(self) -> int:
        return int(self.assignment["attempt"])

    @property
    def token(self) -> str:
        return str(self.assignment["token"])


class SimDevice:
    """One simulated instrument: a heartbeat task and a claim task (which records what it takes)."""

    def __init__(self, sim: Simulation, name: str, token: str, index: int) -> None:
        self.sim = sim
        self.name = name
        self.token = token
        self.index = index
        self.rng = random.Random(f"{sim.settings.seed}-{name}" if sim.settings.seed is not None else None)
        self.interval_s = sim.settings.heartbeat_s or DEFAULT_INTERVAL_S
        self.temperature_c = 24.0 + self.rng.uniform(-0.5, 0.5)
        self.disk_free = 400 * 2**30 + self.rng.randrange(2**30)
        self.completed = 0
        self.connected = asyncio.Event()
        self.awake = asyncio.Event()  # cleared while paused
        self.awake.set()
        self.revoked = False
        self.job: SimJob | None = None
        self.tasks: list[asyncio.Task[None]] = []
        self.wire: Wire  # while its heartbeat task runs

    def __repr__(self) -> str:
        return f"device {self.name}"

    @property
    def alive(self) -> bool:
        return any(not t.done() for t in self.tasks)

    def start(self, delay_s: float) -> None:
        self.tasks = [asyncio.create_task(self._heartbeats(delay_s), name=f"{self.name}-heartbeat")]

    def kill(self) -> None:
        """Gone at once: no goodbye, no report about the job it held (its lease runs out)."""
        for task in self._all_tasks():
            task.cancel()
        self.tasks = []
        self.job = None
        self.connected.clear()
        self.awake.set()

    async def give_back(self) -> None:
        """Stopping: the job held (if any) is reported lost, so that the server queues it again now."""
        job = self.job
        if job is None or not self.awake.is_set():
            return
        for task in self._all_tasks():
            task.cancel()
        end: dict[str, Any] = {
            "outcome": "lost",
            "exit_code": None,
            "message": f"{self.name} stopped",
            "usage": {},
        }
        with contextlib.suppress(WorkerApiError):
            await self.sim.wire.call(
                "POST", f"/jobs/{job.id}/finish", token=job.token, job_call=True, json=end, tries=2
            )

    def _all_tasks(self) -> list[asyncio.Task[None]]:
        job_task = self.job.task if self.job is not None else None
        return [*self.tasks, *([job_task] if job_task is not None else [])]

    # ------------------------------------------------------------------------------------- heartbeats

    def status(self) -> dict[str, Any]:
        recording = self.job is not None
        self.temperature_c += self.rng.gauss(0, 0.05) + (24.0 - self.temperature_c) * 0.05
        return {
            "camera": "recording" if recording else "idle",
            "fps": 30 if recording else 0,
            "temperature_c": round(self.temperature_c + (0.6 if recording else 0.0), 2),
        }

    def telemetry(self) -> dict[str, Any]:
        return {
            "hostname": self.name,
            "simulated": True,
            "load1": round(self.rng.uniform(0.05, 0.3) + (0.8 if self.job else 0.0), 2),
            "disk_free_bytes": self.disk_free,
            "disk_total_bytes": 512 * 2**30,
            "jobs_completed": self.completed,
            "status": self.status(),
        }

    async def _heartbeats(self, delay_s: float) -> None:
        await asyncio.sleep(delay_s)
        async with self.sim.client(DEVICE_CONNECTIONS) as client:  # closed when the task ends (or is killed)
            self.wire = Wire(client)
            await self._heartbeat_loop()

    async def _heartbeat_loop(self) -> None:
        backoff = Backoff()
        while True:
            await self.awake.wait()
            began = time.monotonic()
            try:
                await self._heartbeat()
            except TokenRejected as exc:
                self._revoked(exc.detail)
                return
            except WorkerApiError:
                self.sim.stats.heartbeat_failures += 1
                await asyncio.sleep(min(backoff.next(), self.interval_s))
                continue
            backoff.reset()
            if not self.connected.is_set():
                self.connected.set()
                if self.sim.settings.claims:
                    self.tasks.append(asyncio.create_task(self._claims(), name=f"{self.name}-claims"))
            await asyncio.sleep(max(0.0, self.interval_s - (time.monotonic() - began)))

    async def _heartbeat(self) -> None:
        job = self.job
        body = {
            "capacity": self.sim.settings.capacity,
            "free": self._free(),
            "telemetry": self.telemetry(),
            "jobs": [{"id": job.id, "attempt": job.attempt}] if job is not None else [],
            "version": __version__,
        }
        began = time.perf_counter()
        response = await self.wire.call("POST", "/heartbeat", token=self.token, json=body, tries=1)
        self.sim.stats.heartbeat_latency_s.append(time.perf_counter() - began)
        self.sim.stats.heartbeats += 1
        answer = response.json()
        if self.sim.settings.heartbeat_s is None:
            with contextlib.suppress(KeyError, TypeError, ValueError):
                self.interval_s = max(0.1, float(answer["heartbeat_interval_s"]))
        if job is None or self.job is not job:
            return
        if job.id in {str(i) for i in answer.get("abort") or []}:
            self._drop(job, "the server took it back")
        elif job.id in {str(i) for i in answer.get("cancel") or []}:
            job.cancel.set()

    def _free(self) -> dict[str, float]:
        if self.job is None:
            return self.sim.settings.capacity
        return {key: 0.0 for key in self.sim.settings.capacity}  # one recording at a time

    def _revoked(self, detail: str) -> None:
        log.error("%s: the server refused its token (%s); it stops", self, detail)
        self.revoked = True
        self.kill()

    # ------------------------------------------------------------------------------------- jobs

    async def _claims(self) -> None:
        wait_s = min(MAX_CLAIM_WAIT_S, self.sim.settings.claim_wait_s)
        backoff = Backoff()
        while True:
            await self.awake.wait()
            try:
                response = await self.wire.call(
                    "POST",
                    "/claim",
                    token=self.token,
                    json={"free": self._free(), "labels": {}, "wait_s": wait_s},
                    accept=(204,),
                    timeout=30.0 + wait_s,
                )
            except TokenRejected as exc:
                self._revoked(exc.detail)
                return
            except WorkerApiError as exc:
                log.warning("%s: claim refused: %s", self, exc.detail)
                await asyncio.sleep(backoff.next())
                continue
            backoff.reset()
            self.sim.stats.claims += 1
            if response.status_code != 200 or not response.content:
                continue
            assignment = response.json().get("job")
            if not assignment:
                continue
            job = self.job = SimJob(assignment)
            self.sim.stats.taken += 1
            job.task = asyncio.create_task(self._record(job), name=f"{self.name}-job")
            await asyncio.wait([job.task])

    def _drop(self, job: SimJob, why: str) -> None:
        log.info("%s: job %s (attempt %d): %s; reporting nothing more", self, job.id, job.attempt, why)
        self.sim.stats.aborted += 1
        if self.job is job:
            self.job = None
        if job.task is not None and job.task is not asyncio.current_task():
            job.task.cancel()

    async def _record(self, job: SimJob) -> None:
        try:
            await self._run(job)
        except Fenced:
            self._drop(job, "fenced")
        except TokenRejected as exc:
            self._revoked(exc.detail)
        except WorkerApiError as exc:
            log.warning("%s: job %s dropped: %s", self, job.id, exc.detail)
            self.sim.stats.errors += 1
        finally:
            if self.job is job:
                self.job = None

    async def _job_call(self, job: SimJob, method: str, what: str, **kwargs: Any) -> httpx.Response:
        await self.awake.wait()
        return await self.wire.call(
            method, f"/jobs/{job.id}/{what}", token=job.token, job_call=True, **kwargs
        )

    async def _run(self, job: SimJob) -> None:
        params = job.assignment.get("params") or {}
        try:
            duration = max(0.0, float(params.get("duration_s", self.sim.settings.duration_s)))
        except (TypeError, ValueError):
            duration = self.sim.settings.duration_s
        started = (await self._job_call(job, "POST", "start", json={})).json()
        if started.get("state") == "cancelling":
            job.cancel.set()
        loop = asyncio.get_running_loop()
        began = loop.time()
        await self._log(job, f"{self.name}: recording {duration:g} s at 30 fps (attempt {job.attempt})")
        elapsed = 0.0
        while elapsed < duration and not job.cancel.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(job.cancel.wait(), min(self.sim.settings.step_s, duration - elapsed))
            await self.awake.wait()
            elapsed = min(duration, loop.time() - began)
            if job.cancel.is_set():
                break
            answer = (
                await self._job_call(job, "POST", "progress", json={"fraction": elapsed / duration})
            ).json()
            if answer.get("cancel"):
                job.cancel.set()
            await self._log(job, f"t={elapsed:.1f}s frames={round(elapsed * 30)}")
        usage = {"wall_s": round(loop.time() - began, 3)}
        if job.cancel.is_set():
            await self._log(job, f"{self.name}: stopped at t={elapsed:.1f}s: cancelled")
            await self._finish(
                job, {"outcome": "cancelled", "exit_code": None, "message": "cancelled", "usage": usage}
            )
            self.sim.stats.cancelled += 1
            return
        name = f"{params.get('prefix') or self.name}.txt"
        text = (
            f"device: {self.name}\njob: {job.id}\nattempt: {job.attempt}\n"
            f"duration_s: {duration:g}\nframes: {round(duration * 30)}\n"
        ).encode()
        await self._job_call(
            job,
            "PUT",
            f"outputs/{quote_path(name)}",
            content=text,
            headers={"Content-Type": "application/octet-stream"},
        )
        self.disk_free -= len(text)
        if self.rng.random() < self.sim.settings.fail_rate:
            await self._log(job, f"{self.name}: the camera dropped frames (simulated failure)")
            end = {"outcome": "exited", "exit_code": 1, "message": "simulated failure", "usage": usage}
            state = await self._finish(job, end)
        else:
            await self._log(job, f"{self.name}: wrote {name}")
            state = await self._finish(
                job, {"outcome": "exited", "exit_code": 0, "message": "", "usage": usage}
            )
        if state == "succeeded":
            self.sim.stats.succeeded += 1
        elif state == "cancelled":
            self.sim.stats.cancelled += 1
        else:
            self.sim.stats.failed += 1
        self.completed += 1

    async def _log(self, job: SimJob, line: str) -> None:
        job.log += (line + "\n").encode()
        for _ in range(3):  # a gap (409) tells where the server's copy ends: send from there
            response = await self._job_call(
                job,
                "POST",
                "log",
                content=bytes(job.log[job.sent :]),
                headers={"Log-Offset": str(job.sent), "Content-Type": "application/octet-stream"},
                accept=(409,),
            )
            job.sent = int(response.json()["size"])
            if job.sent >= len(job.log):
                return

    async def _finish(self, job: SimJob, body: dict[str, Any]) -> str:
        answer = (await self._job_call(job, "POST", "finish", json=body)).json()
        return str(answer.get("state") or "")


# ------------------------------------------------------------------------------------------ the fleet


class Simulation:
    """Simulated devices on one event loop (:meth:`run`); steer them with :meth:`kill`, :meth:`revive`,
    :meth:`pause` and :meth:`resume` from the loop's thread (or through :class:`SimulationThread`)."""

    def __init__(self, server: str, tokens: Mapping[str, str], settings: SimSettings | None = None) -> None:
        server = server.strip().rstrip("/")
        self.server = server if "://" in server else "http://" + server
        self.settings = settings or SimSettings()
        self.stats = Stats()
        self.devices = {
            name: SimDevice(self, name, token, i) for i, (name, token) in enumerate(tokens.items())
        }
        self.wire: Wire
        self._ssl = httpx.create_ssl_context()  # made once: loading the CA certificates takes some 20 ms

    def client(self, connections: int) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            base_url=self.server,
            limits=httpx.Limits(
                max_connections=connections,
                max_keepalive_connections=connections,
                keepalive_expiry=KEEP_ALIVE_S,
            ),
            timeout=httpx.Timeout(30.0, connect=10.0, pool=None),
            headers={"User-Agent": f"labcloud-simulator/{__version__}", "Accept": "application/json"},
            verify=self._ssl,
        )

    async def run(self, stop: asyncio.Event) -> None:
        """Run every device until ``stop`` is set, then stop them all (a job held is reported lost)."""
        n = len(self.devices)
        async with self.client(16) as c:  # for the give-backs at the end
            self.wire = Wire(c)
            stagger = self.settings.stagger_s
            if stagger is None:
                stagger = self.settings.heartbeat_s or DEFAULT_INTERVAL_S
            for device in self.devices.values():
                device.start(stagger * device.index / max(1, n))
            try:
                await stop.wait()
            finally:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        asyncio.gather(
                            *(d.give_back() for d in self.devices.values()), return_exceptions=True
                        ),
                        10.0,
                    )
                tasks = [task for device in self.devices.values() for task in device._all_tasks()]
                for device in self.devices.values():
                    device.kill()
                await asyncio.gather(*tasks, return_exceptions=True)  # their clients closed

    def _device(self, name: str) -> SimDevice:
        try:
            return self.devices[name]
        except KeyError:
            raise KeyError(f"no simulated device {name!r}") from None

    def kill(self, name: str) -> None:
        """The device vanishes at once: heartbeats, claims and its recording stop without a word."""
        self._device(name).kill()

    def revive(self, name: str) -> None:
        """A killed device comes back (with nothing held), heartbeating and claiming again."""
        device = self._device(name)
        if not device.alive:
            device.revoked = False
            device.start(0.0)

    def pause(self, name: str) -> None:
        """The device freezes (as a machine whose network went away): it keeps its job, reports nothing."""
        self._device(name).awake.clear()

    def resume(self, name: str) -> None:
        """A paused device goes on where it stopped; a job taken back meanwhile is dropped unreported."""
        self._device(name).awake.set()

    def holding(self) -> dict[str, str]:
        """Job id -> the device recording it now."""
        return {d.job.id: d.name for d in self.devices.values() if d.job is not None}

    def connected(self) -> int:
        return sum(d.connected.is_set() for d in self.devices.values())


class SimulationThread:
    """A :class:`Simulation` on an event loop in a thread of its own, steered from other threads."""

    def __init__(self, server: str, tokens: Mapping[str, str], settings: SimSettings | None = None) -> None:
        self.simulation = Simulation(server, tokens, settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._main, name="device-simulator", daemon=True)
        self.error: BaseException | None = None

    def start(self, connected_within_s: float | None = 60.0) -> SimulationThread:
        """Start; wait (up to ``connected_within_s``) until every device's first heartbeat went through."""
        self._thread.start()
        self._ready.wait()
        if connected_within_s is not None:
            deadline = time.monotonic() + connected_within_s
            while self.call(self.simulation.connected) < len(self.simulation.devices):
                if self.error is not None or time.monotonic() > deadline:
                    connected = self.call(self.simulation.connected)
                    self.stop()
                    raise SimulatorError(
                        f"{connected} of {len(self.simulation.devices)} devices connected within "
                        f"{connected_within_s:g} s ({self.error or 'the server is slow or refuses them'})"
                    )
                time.sleep(0.05)
        return self

    def _main(self) -> None:
        async def main() -> None:
            self._loop = asyncio.get_running_loop()
            self._stop = asyncio.Event()
            self._ready.set()
            await self.simulation.run(self._stop)

        try:
            asyncio.run(main())
        except BaseException as exc:
            self.error = exc
            raise
        finally:
            self._ready.set()

    def call(self, func: Any, *args: Any) -> Any:
        """``func(*args)`` on the simulation's loop; its result."""
        if self._loop is None or not self._thread.is_alive():
            raise SimulatorError(f"the simulation is not running ({self.error or 'stopped'})")

        async def run() -> Any:
            return func(*args)

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=30)

    def kill(self, name: str) -> None:
        self.call(self.simulation.kill, name)

    def revive(self, name: str) -> None:
        self.call(self.simulation.revive, name)

    def pause(self, name: str) -> None:
        self.call(self.simulation.pause, name)

    def resume(self, name: str) -> None:
        self.call(self.simulation.resume, name)

    def holding(self) -> dict[str, str]:
        result: dict[str, str] = self.call(self.simulation.holding)
        return result

    def stats(self, reset_latencies: bool = False) -> dict[str, float]:
        """The fleet's :class:`Stats` summary (and a fresh start for the latencies)."""

        def read() -> dict[str, float]:
            summary = self.simulation.stats.summary()
            if reset_latencies:
                self.simulation.stats.reset_latencies()
            return summary

        result: dict[str, float] = self.call(read)
        return result

    def latencies(self) -> list[float]:
        """Every heartbeat's time to answer since the last reset, in seconds."""
        result: list[float] = self.call(lambda: list(self.simulation.stats.heartbeat_latency_s))
        return result

    def stop(self) -> None:
        if self._loop is not None and self._stop is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    def __enter__(self) -> SimulationThread:
        return self if self._thread.ident is not None else self.start()  # started already: as it is

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ------------------------------------------------------------------------------------------ registration


def device_names(prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(1, count + 1)]


def register(
    server: str,
    admin_token: str | None,
    names: list[str],
    labels: Mapping[str, str] | None = None,
    tokens_file: Path | None = None,
) -> dict[str, str]:
    """A worker token for each name: from ``tokens_file`` (JSON ``{name: token}``) when it has one, else
    registered now through the admin API (``POST /api/v1/workers``) and added to the file (mode 0600)."""
    known: dict[str, str] = {}
    if tokens_file is not None and tokens_file.exists():
        try:
            known = {str(k): str(v) for k, v in json.loads(tokens_file.read_text()).items()}
        except (OSError, ValueError, AttributeError) as exc:
            raise SimulatorError(f"cannot read the tokens file {tokens_file}: {exc}") from None
    tokens = {name: known[name] for name in names if name in known}
    missing = [name for name in names if name not in tokens]
    if missing and not admin_token:
        raise SimulatorError(
            f"{len(missing)} device(s) to register ({missing[0]}...): an administrator's token is needed "
            "(--admin-token or LABCLOUD_TOKEN, with the admin scope)"
        )
    server = server.strip().rstrip("/")
    try:
        with httpx.Client(
            base_url=server if "://" in server else "http://" + server,
            timeout=30,
            headers=bearer(admin_token),
        ) as http:
            for name in missing:
                r = http.post("/api/v1/workers", json={"name": name, "labels": dict(labels or {})})
                if r.status_code == 409:
                    hint = (
                        f"it is not in {tokens_file}" if tokens_file else "pass --tokens-file to keep tokens"
                    )
                    raise SimulatorError(
                        f"a worker named {name!r} exists and its token is unknown ({hint}); "
                        "choose another --prefix, or revoke it"
                    )
                if r.status_code != 201:
                    raise SimulatorError(f"registering {name!r}: {r.status_code} {problem_detail(r)[1]}")
                tokens[name] = str(r.json()["token"])
    except httpx.HTTPError as exc:
        raise SimulatorError(f"cannot reach {server}: {describe(exc)}") from None
    finally:
        if tokens_file is not None and len(tokens) > len(known.keys() & tokens.keys()):
            _save_tokens(tokens_file, known | tokens)
    return {name: tokens[name] for name in names}


def _save_tokens(path: Path, tokens: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(tokens, fh, indent=1)
    os.replace(temp, path)
