"""lif -- a sparse network of leaky integrate-and-fire neurons, swept over one parameter.

Run it as::

    python -m labcloud_demo.lif --sweep-param drive --values 5,10,20 --out results/

The model follows Brunel (2000, J Comput Neurosci 8:183): 80% excitatory and 20% inhibitory neurons,
random connections with probability ``--p-connect``, delta synapses of ``J`` mV (excitatory) and
``-g*J`` mV (inhibitory) with a 1.5 ms delay, and independent external Poisson input of
``--drive`` kHz per neuron, each event a 0.2 mV kick (so 5 kHz alone brings the mean potential to
threshold). Membrane: tau 20 ms, threshold 20 mV, reset 10 mV, refractory 2 ms; forward Euler with
dt = 0.1 ms. The connectivity is drawn once (from ``--seed``) and shared by all sweep points.

Outputs in ``--out``: ``rates.csv`` (sweep value, mean excitatory and inhibitory rate), ``raster.png``
(rasters of up to four sweep points and the rate-versus-parameter curve) and ``summary.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labcloud_demo.progress import InputError, finish_run, log, make_output_folder, report, run_app

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.intp]

DT_MS = 0.1
TAU_MS = 20.0
THETA_MV = 20.0
RESET_MV = 10.0
REFRACTORY_MS = 2.0
DELAY_MS = 1.5
J_EXT_MV = 0.2
EXC_FRACTION = 0.8
MAX_POINTS = 50
MAX_PROGRESS_LINES = 90

# sweepable parameter -> (unit, default sweep values)
SWEEPS: dict[str, tuple[str, tuple[float, ...]]] = {
    "drive": ("kHz", (4.0, 5.0, 6.0, 7.0, 8.0)),
    "coupling": ("mV", (0.25, 0.5, 1.0, 1.5, 2.0)),
    "g": ("", (4.0, 5.0, 6.0, 8.0, 10.0)),
}


def column_name(param: str) -> str:
    """CSV column for the swept parameter, e.g. ``drive_khz``."""
    unit = SWEEPS[param][0]
    return f"{param}_{unit.lower()}" if unit else param


def describe(param: str, value: float) -> str:
    """``drive=5 kHz``-style label."""
    return f"{param}={value:g} {SWEEPS[param][0]}".rstrip()


@dataclass
class Network:
    """Fixed random connectivity: ``adjacency[post, pre]`` is True where ``pre`` projects to ``post``."""

    adjacency: NDArray[np.bool_]
    n_exc: int

    @property
    def n(self) -> int:
        """Number of neurons."""
        return int(self.adjacency.shape[0])

    def weights(self, coupling_mv: float, g: float) -> FloatArray:
        """Synaptic weights in mV: +J from excitatory, -g*J from inhibitory presynaptic neurons."""
        sign = np.where(np.arange(self.n) < self.n_exc, 1.0, -g)
        return self.adjacency * (coupling_mv * sign)[np.newaxis, :]


@dataclass
class Result:
    """Spikes of one simulation and the mean rates after the initial transient."""

    value: float
    spike_steps: IntArray
    spike_ids: IntArray
    rate_exc_hz: float
    rate_inh_hz: float
    n_spikes: int
    seconds: float


def make_network(n: int, p_connect: float, rng: np.random.Generator) -> Network:
    """Draw a random network of ``n`` neurons (80% excitatory) without self-connections."""
    adjacency = rng.random((n, n)) < p_connect
    np.fill_diagonal(adjacency, False)
    return Network(adjacency=adjacency, n_exc=round(EXC_FRACTION * n))


def simulate(
    net: Network,
    drive_khz: float,
    coupling_mv: float,
    g: float,
    duration_ms: float,
    rng: np.random.Generator,
    on_step: Callable[[int], None] | None = None,
) -> tuple[IntArray, IntArray]:
    """Integrate the network; return the time step and neuron index of every spike.

    ``on_step(k)`` is called after step ``k`` (used for progress reports).
    """
    n = net.n
    steps = round(duration_ms / DT_MS)
    weights = net.weights(coupling_mv, g)
    delay = max(1, round(DELAY_MS / DT_MS))
    ref_steps = round(REFRACTORY_MS / DT_MS)
    decay = 1.0 - DT_MS / TAU_MS  # Euler step of dV/dt = -V / tau
    kicks_per_step = drive_khz * DT_MS  # mean number of external events per neuron and step

    v = rng.uniform(0.0, THETA_MV, n)
    refractory = np.zeros(n, dtype=np.int64)
    arriving = np.zeros((delay, n))  # ring buffer of delayed recurrent input, one row per step
    spike_steps: list[IntArray] = []
    spike_ids: list[IntArray] = []
    block = max(1, min(steps, 1_000_000 // n))  # draw the external input in blocks of steps

    for start in range(0, steps, block):
        external = rng.poisson(kicks_per_step, size=(min(block, steps - start), n)) * J_EXT_MV
        for offset, kicks in enumerate(external):
            k = start + offset
            slot = k % delay
            v = v * decay + kicks + arriving[slot]
            arriving[slot] = 0.0
            clamped = refractory > 0
            v[clamped] = RESET_MV
            refractory[clamped] -= 1
            fired = np.flatnonzero(v >= THETA_MV)
            if fired.size:
                v[fired] = RESET_MV
                refractory[fired] = ref_steps
                arriving[slot] += weights[:, fired].sum(axis=1)  # delivered `delay` steps later
                spike_steps.append(np.full(fired.size, k, dtype=np.intp))
                spike_ids.append(fired.astype(np.intp))
            if on_step is not None:
                on_step(k)
    if not spike_steps:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    return np.concatenate(spike_steps), np.concatenate(spike_ids)


def mean_rates(
    net: Network, steps: IntArray, ids: IntArray, duration_ms: float, transient_ms: float
) -> tuple[float, float]:
    """Mean excitatory and inhibitory firing rates (Hz) after ``transient_ms``."""
    keep = steps * DT_MS >= transient_ms
    window_s = (duration_ms - transient_ms) / 1000.0
    n_exc_spikes = int(np.count_nonzero(ids[keep] < net.n_exc))
    n_inh_spikes = int(np.count_nonzero(keep)) - n_exc_spikes
    return n_exc_spikes / (net.n_exc * window_s), n_inh_spikes / ((net.n - net.n_exc) * window_s)


# ------------------------------------------------------------------------------------------- outputs


def plot_results(
    path: Path, net: Network, results: list[Result], shown: list[int], param: str, duration_ms: float
) -> None:
    """Rasters of the sweep points ``shown`` (top) and mean rate versus the swept parameter (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    unit = SWEEPS[param][0]
    fig = plt.figure(figsize=(3.2 * max(len(shown), 2) + 1, 7))
    grid = fig.add_gridspec(
        2, len(shown), height_ratios=[3, 2], left=0.07, right=0.98, bottom=0.08, top=0.95, hspace=0.3
    )
    n_exc, n_inh = min(net.n_exc, 240), min(net.n - net.n_exc, 60)  # neurons drawn in each raster
    for column, index in enumerate(shown):
        result = results[index]
        ax = fig.add_subplot(grid[0, column])
        t_ms = result.spike_steps * DT_MS
        exc = result.spike_ids < n_exc
        inh = (result.spike_ids >= net.n_exc) & (result.spike_ids < net.n_exc + n_inh)
        ax.plot(t_ms[exc], result.spike_ids[exc], "|", color="tab:blue", ms=2, mew=0.5)
        ax.plot(t_ms[inh], result.spike_ids[inh] - net.n_exc + n_exc, "|", color="tab:red", ms=2, mew=0.5)
        ax.set(xlim=(0, duration_ms), ylim=(-1, n_exc + n_inh), xlabel="time (ms)")
        ax.set_title(describe(param, result.value), fontsize=10)
        if column == 0:
            ax.set_ylabel("neuron (blue exc., red inh.)")

    ax = fig.add_subplot(grid[1, :])
    values = [r.value for r in results]
    ax.plot(values, [r.rate_exc_hz for r in results], "o-", color="tab:blue", label="excitatory")
    ax.plot(values, [r.rate_inh_hz for r in results], "s--", color="tab:red", label="inhibitory")
    ax.set(xlabel=f"{param} ({unit})" if unit else param, ylabel="mean rate (Hz)", title="Mean firing rate")
    ax.legend()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------- CLI


def _number_list(text: str) -> list[float]:
    try:
        values = [float(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m labcloud_demo.lif",
        description="Sweep a sparse E/I network of leaky integrate-and-fire neurons over one parameter.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--sweep-param", choices=sorted(SWEEPS), default="drive", help="parameter to sweep")
    parser.add_argument("--values", type=_number_list, help="sweep values, e.g. 5,10,20")
    parser.add_argument("--start", type=float, help="first sweep value (with --stop and --steps)")
    parser.add_argument("--stop", type=float, help="last sweep value")
    parser.add_argument("--steps", type=int, help="number of sweep values from --start to --stop")
    parser.add_argument("--drive", type=float, default=6.0, help="external Poisson input per neuron, kHz")
    parser.add_argument("--coupling", type=float, default=1.0, help="excitatory weight J, mV")
    parser.add_argument("--g", type=float, default=8.0, help="relative inhibitory weight (-g*J)")
    parser.add_argument("--p-connect", type=float, default=0.1, help="connection probability")
    parser.add_argument("--neurons", type=int, default=200, help="number of neurons (80%% excitatory)")
    parser.add_argument("--duration-ms", type=float, default=500.0, help="simulated time per sweep point")
    parser.add_argument("--seed", type=int, default=0, help="random seed (network and input)")
    return parser


def sweep_values(args: argparse.Namespace) -> list[float]:
    """The sweep values from ``--values``, ``--start/--stop/--steps`` or the defaults."""
    ranged = (args.start, args.stop, args.steps)
    if args.values is not None and any(x is not None for x in ranged):
        raise InputError("give either --values or --start/--stop/--steps, not both")
    if args.values is not None:
        values = list(args.values)
    elif any(x is not None for x in ranged):
        if any(x is None for x in ranged):
            raise InputError("--start, --stop and --steps must be given together")
        if args.steps < 1:
            raise InputError(f"--steps must be at least 1, got {args.steps}")
        values = np.linspace(args.start, args.stop, args.steps).tolist()
    else:
        values = list(SWEEPS[args.sweep_param][1])
    if len(values) > MAX_POINTS:
        raise InputError(f"at most {MAX_POINTS} sweep values, got {len(values)}")
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise InputError(f"sweep values for {args.sweep_param} must be >= 0, got {bad[0]:g}")
    return values


def check_args(args: argparse.Namespace) -> None:
    """Reject arguments the simulation cannot use."""
    if not 10 <= args.neurons <= 2000:
        raise InputError(f"--neurons must be between 10 and 2000, got {args.neurons}")
    if not 10.0 <= args.duration_ms <= 60_000.0:
        raise InputError(f"--duration-ms must be between 10 and 60000, got {args.duration_ms:g}")
    if not 0.0 < args.p_connect <= 1.0:
        raise InputError(f"--p-connect must be in (0, 1], got {args.p_connect:g}")
    for name in ("drive", "coupling", "g"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            raise InputError(f"--{name} must be >= 0, got {value:g}")


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Run the sweep described by ``args``, write the outputs and return the summary."""
    check_args(args)
    values = sweep_values(args)
    param, unit = args.sweep_param, SWEEPS[args.sweep_param][0]
    make_output_folder(args.out)

    started = time.perf_counter()
    report(0.0)
    rng = np.random.default_rng(args.seed)
    net = make_network(args.neurons, args.p_connect, rng)
    transient_ms = min(100.0, args.duration_ms / 5)
    log(
        f"network: {net.n_exc} excitatory + {net.n - net.n_exc} inhibitory neurons, "
        f"{int(net.adjacency.sum())} synapses (p={args.p_connect:g}); "
        f"sweeping {param} over {', '.join(f'{v:g}' for v in values)} {unit}".rstrip()
    )

    steps = round(args.duration_ms / DT_MS)
    total = steps * len(values)
    stride = max(1, math.ceil(total / MAX_PROGRESS_LINES))
    shown = sorted({round(i) for i in np.linspace(0, len(values) - 1, min(4, len(values)))})
    results: list[Result] = []
    for index, value in enumerate(values):
        settings = {"drive": args.drive, "coupling": args.coupling, "g": args.g} | {param: value}
        done_before = index * steps

        def on_step(k: int, done_before: int = done_before) -> None:
            if (done_before + k + 1) % stride == 0:
                report(0.95 * (done_before + k + 1) / total)

        t0 = time.perf_counter()
        spike_steps, spike_ids = simulate(
            net,
            settings["drive"],
            settings["coupling"],
            settings["g"],
            args.duration_ms,
            np.random.default_rng([args.seed, index]),
            on_step,
        )
        rate_exc, rate_inh = mean_rates(net, spike_steps, spike_ids, args.duration_ms, transient_ms)
        keep = index in shown  # keep the spikes only of the sweep points drawn as rasters
        results.append(
            Result(
                value=value,
                spike_steps=spike_steps if keep else spike_steps[:0],
                spike_ids=spike_ids if keep else spike_ids[:0],
                rate_exc_hz=rate_exc,
                rate_inh_hz=rate_inh,
                seconds=time.perf_counter() - t0,
                n_spikes=int(spike_steps.size),
            )
        )
        log(
            f"[{index + 1}/{len(values)}] {describe(param, value)}: excitatory {rate_exc:.2f} Hz, "
            f"inhibitory {rate_inh:.2f} Hz ({spike_steps.size} spikes, {results[-1].seconds:.2f} s)"
        )

    with (args.out / "rates.csv").open("w", encoding="utf-8") as fh:
        fh.write(f"{column_name(param)},rate_exc_hz,rate_inh_hz\n")
        for r in results:
            fh.write(f"{r.value:g},{r.rate_exc_hz:.4f},{r.rate_inh_hz:.4f}\n")
    summary: dict[str, Any] = {
        "sweep_param": param,
        "unit": unit,
        "values": values,
        "rate_exc_hz": [r.rate_exc_hz for r in results],
        "rate_inh_hz": [r.rate_inh_hz for r in results],
        "n_spikes": [r.n_spikes for r in results],
        "neurons": {"total": net.n, "excitatory": net.n_exc, "inhibitory": net.n - net.n_exc},
        "synapses": int(net.adjacency.sum()),
        "parameters": {
            "drive_khz": args.drive,
            "coupling_mv": args.coupling,
            "g": args.g,
            "p_connect": args.p_connect,
            "duration_ms": args.duration_ms,
            "transient_ms": transient_ms,
            "dt_ms": DT_MS,
            "tau_ms": TAU_MS,
            "threshold_mv": THETA_MV,
            "reset_mv": RESET_MV,
            "refractory_ms": REFRACTORY_MS,
            "delay_ms": DELAY_MS,
            "j_ext_mv": J_EXT_MV,
            "seed": args.seed,
        },
        "wall_time_s": time.perf_counter() - started,
    }

    def plot(path: Path) -> None:
        plot_results(path, net, results, shown, param, args.duration_ms)

    return finish_run(args.out, summary, started, 0.97, plot, table="rates.csv", figure="raster.png")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit status 0 on success, 2 on bad arguments."""
    return run_app(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
