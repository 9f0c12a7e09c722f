"""Instruments as workers: what a fleet of 500 idle devices costs the server.

Target: with 500 devices heartbeating every 10 s, the server process uses under 10% of one core.

A real ``labcloud serve`` (pull executor, default 60 s leases) and 500 simulated devices
(:mod:`labcloud.worker.simulator`, in this process: one event loop) registered through the admin API, their
first heartbeats spread over one 10 s period. After one more period to settle, the server's CPU time (user +
system, from ``/proc/<pid>/stat``) is read over a window (60 s; 20 s with ``--quick``, and 100 devices) and
given in % of one core, with each heartbeat's time to answer as the devices saw it. Two fleets on the same
server, one after the other: heartbeats only, then heartbeats and claims (each device waits in a long-polling
claim, as an idle instrument does).
"""

from __future__ import annotations

import os
import time
from functools import partial

import psutil

from bench.harness import Result, Server, percentile, running_server, with_machine
from labcloud.worker.simulator import SimSettings, SimulationThread, device_names, register

DEVICES, DEVICES_QUICK = 500, 100
HEARTBEAT_S = 10.0
WINDOW_S, WINDOW_QUICK_S = 60.0, 20.0
TARGET = "server CPU < 10% of one core"
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds_of(pid: int) -> float:
    """A live process's CPU time so far (user + system), from /proc/<pid>/stat."""
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS  # utime, stime: fields 14 and 15 of the line


def run(backends: list[str], quick: bool = False) -> list[Result]:
    results: list[Result] = []
    for backend in backends:
        try:
            results += measure(backend, quick)
        except Exception as exc:
            note = f"FAILED: {exc.__class__.__name__}: {exc}"[:600]
            results.append(Result("devices: 500 idle devices", backend, {}, target=TARGET, notes=note))
    return results


def measure(backend: str, quick: bool) -> list[Result]:
    count = DEVICES_QUICK if quick else DEVICES
    rows: list[Result] = []
    with running_server(backend, {"LABCLOUD_EXECUTOR": "pull"}) as server:
        assert server.process is not None
        pid = server.process.pid
        tokens = register(server.url, server.admin_token(), device_names("bench-device", count))
        for claims in (False, True):
            rows += with_machine(
                partial(fleet, server, tokens, claims, quick), extra=partial(cpu_seconds_of, pid)
            )
    return rows


def fleet(server: Server, tokens: dict[str, str], claims: bool, quick: bool) -> list[Result]:
    assert server.process is not None
    pid = server.process.pid
    count = len(tokens)
    window = WINDOW_QUICK_S if quick else WINDOW_S
    settings = SimSettings(heartbeat_s=HEARTBEAT_S, stagger_s=HEARTBEAT_S, claims=claims, seed=1)
    me = psutil.Process()
    with SimulationThread(server.url, tokens, settings).start(connected_within_s=60 + count / 10) as sim:
        time.sleep(HEARTBEAT_S)  # a whole period at the steady rhythm
        before = sim.stats(reset_latencies=True)
        server0, client0, wall0 = cpu_seconds_of(pid), sum(me.cpu_times()[:2]), time.monotonic()
        time.sleep(window)
        server1, client1, wall1 = cpu_seconds_of(pid), sum(me.cpu_times()[:2]), time.monotonic()
        after = sim.stats()
        latencies = [s * 1000 for s in sim.latencies()]
    elapsed = wall1 - wall0
    rss_mb = psutil.Process(pid).memory_info().rss / 2**20
    kind = "heartbeats and waiting claims" if claims else "heartbeats only"
    return [
        Result(
            f"devices: {count} idle devices, {kind}",
            server.backend,
            {
                "server_cpu_pct": round((server1 - server0) / elapsed * 100, 1),
                "devices": float(count),
                "heartbeats_per_s": round((after["heartbeats"] - before["heartbeats"]) / elapsed, 1),
                "heartbeat_p50_ms": round(percentile(latencies, 50), 1),
                "heartbeat_p95_ms": round(percentile(latencies, 95), 1),
                "heartbeat_max_ms": round(max(latencies, default=float("nan")), 1),
                "heartbeat_failures": after["heartbeat_failures"],
                "claims_answered": after["claims"] - before["claims"],
                "simulator_cpu_pct": round((client1 - client0) / elapsed * 100, 1),
                "server_rss_mb": round(rss_mb),
            },
            target=TARGET,
            notes=f"{count} simulated devices (one asyncio loop in the benchmark's process) heartbeating "
            f"every {HEARTBEAT_S:g} s with telemetry and a status, first heartbeats spread over "
            f"{HEARTBEAT_S:g} s; "
            + (
                "each also waiting in a long-polling claim (wait_s 30, nothing queued); "
                if claims
                else "no claims; "
            )
            + f"server CPU (utime+stime of `labcloud serve`) over {window:g} s after one period to settle, "
            "in % of one core; heartbeat ms: request to answer as the device saw it",
        )
    ]
