"""``labcloud devices``: instruments as workers. ``simulate`` runs a fleet of simulated devices in this
process (:mod:`labcloud.worker.simulator`); real instruments use :class:`labcloud.worker.Device` in their own
program."""

from __future__ import annotations

import json
import signal
import sys
import time
from pathlib import Path
from typing import Any

import typer

from labcloud.cli.client.ui import err, fail
from labcloud.cli.worker import parse_labels

devices_app = typer.Typer(
    help="Instruments as workers: simulate a fleet of devices (real ones use labcloud.worker.Device).",
    no_args_is_help=True,
)
REPORT_EVERY_S = 10.0


@devices_app.command("simulate")
def simulate(
    count: int = typer.Argument(..., min=1, max=10_000, help="How many devices."),
    server: str | None = typer.Option(
        None, "--server", help="The labcloud server's URL (else $LABCLOUD_SERVER, else the one logged in to)."
    ),
    admin_token: str | None = typer.Option(
        None,
        "--admin-token",
        help="An administrator's API token to register the devices with (else $LABCLOUD_TOKEN, else the "
        "login's); not needed when --tokens-file has them all.",
    ),
    prefix: str = typer.Option("sim", "--prefix", help="The devices are named PREFIX-1 ... PREFIX-N."),
    label: list[str] = typer.Option(
        [], "--label", "--labels", metavar="KEY=VALUE", help="A label to register them with; repeat."
    ),
    tokens_file: Path | None = typer.Option(
        None,
        "--tokens-file",
        help="A JSON file of {name: token}: devices found there are not registered again, new ones are "
        "added (mode 0600). Without it each run needs names not registered yet.",
    ),
    heartbeat_s: float = typer.Option(
        0.0, "--heartbeat-s", min=0, help="Seconds between heartbeats (0: as often as the server asks)."
    ),
    fail_rate: float = typer.Option(0.0, "--fail-rate", min=0, max=1, help="The share of jobs that fail."),
    duration_s: float = typer.Option(
        3.0, "--duration-s", min=0, help="A recording's length when the job's duration_s parameter says none."
    ),
    stagger_s: float | None = typer.Option(
        None,
        "--stagger-s",
        min=0,
        help="Spread the first heartbeats over this (default: one heartbeat period).",
    ),
    claims: bool = typer.Option(True, "--claims/--no-claims", help="Take jobs, or only heartbeat."),
    run_for: float = typer.Option(
        0.0, "--run-for", min=0, help="Stop after this many seconds (0: on Ctrl-C)."
    ),
    stats_file: Path | None = typer.Option(
        None,
        "--stats-file",
        help="Write the fleet's counters and heartbeat latencies here (JSON) at the end.",
    ),
    seed: int | None = typer.Option(None, "--seed", help="Make each device's randomness repeatable."),
    log_level: str = typer.Option("warning", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run COUNT simulated instruments in this process: each a registered worker that heartbeats with a
    "status" ({camera, fps, temperature_c}) in its telemetry, takes jobs and "records" each for its
    duration_s parameter (progress and log lines every second), then uploads <prefix>.txt (the job's
    prefix parameter, else the device's name) and finishes. A cancel stops the recording.

    A summary goes to standard error every 10 s. Ctrl-C stops: jobs still held are given back.
    """
    from labcloud.client.config import ClientConfig, resolve
    from labcloud.worker import simulator
    from labcloud.worker.config import configure_logging

    configure_logging(log_level)
    target = resolve(ClientConfig.load(), server)
    names = simulator.device_names(prefix, count)
    try:
        tokens = simulator.register(
            target.server, admin_token or target.token, names, parse_labels(label), tokens_file
        )
    except simulator.SimulatorError as exc:
        raise fail(str(exc)) from None
    settings = simulator.SimSettings(
        heartbeat_s=heartbeat_s or None,
        claims=claims,
        stagger_s=stagger_s,
        duration_s=duration_s,
        fail_rate=fail_rate,
        seed=seed,
    )
    fleet = simulator.SimulationThread(target.server, tokens, settings)
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        fleet.start(connected_within_s=None)
        err.print(f"{count} simulated devices ({names[0]} ... {names[-1]}) on {target.server}; Ctrl-C stops")
        began = time.monotonic()
        next_report = began + REPORT_EVERY_S
        while not stopping and (not run_for or time.monotonic() - began < run_for):
            time.sleep(0.2)
            if fleet.error is not None:
                raise fail(f"the simulation stopped: {fleet.error}")
            if time.monotonic() >= next_report:
                next_report += REPORT_EVERY_S
                _report(fleet, count)
    except KeyboardInterrupt:
        pass
    finally:
        summary: dict[str, Any] = {}
        if fleet.error is None:
            try:
                summary = fleet.stats() | {
                    "devices": count,
                    "connected": fleet.call(fleet.simulation.connected),
                }
                latencies = fleet.latencies()
            except simulator.SimulatorError:
                latencies = []
            fleet.stop()
            if stats_file is not None:
                stats_file.write_text(json.dumps(summary | {"heartbeat_latency_s": latencies}, indent=1))
    if summary:
        _report_line(summary, count)


def _report(fleet: Any, count: int) -> None:
    summary = fleet.stats() | {
        "connected": fleet.call(fleet.simulation.connected),
        "recording": len(fleet.holding()),
    }
    _report_line(summary, count)


def _report_line(s: dict[str, Any], count: int) -> None:
    latency = (
        f" (p50 {s['heartbeat_p50_ms']:g} ms, p95 {s['heartbeat_p95_ms']:g} ms)"
        if "heartbeat_p50_ms" in s
        else ""
    )
    recording = f", {int(s['recording'])} recording" if "recording" in s else ""
    sys.stderr.write(
        f"{int(s.get('connected', 0))}/{count} devices connected{recording}; "
        f"{int(s['heartbeats'])} heartbeats{latency}, {int(s['heartbeat_failures'])} failed; "
        f"jobs: {int(s['taken'])} taken, {int(s['succeeded'])} succeeded, {int(s['failed'])} failed, "
        f"{int(s['cancelled'])} cancelled, {int(s['aborted'])} taken back\n"
    )
    sys.stderr.flush()


def register(app: typer.Typer) -> None:
    app.add_typer(devices_app, name="devices", rich_help_panel="Compute")
