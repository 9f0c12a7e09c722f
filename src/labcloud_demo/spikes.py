"""spikes -- threshold spike detection on an extracellular voltage trace.

Run it as::

    python -m labcloud_demo.spikes --trace trace.csv --threshold 4.5 --out results/

Method (after Quiroga, Nadasdy & Ben-Shaul 2004, Neural Computation 16:1661):

1. band-pass filter the trace (default 300-3000 Hz) with a zero-phase windowed-sinc FIR filter;
2. estimate the noise robustly as ``sigma = median(|x|) / 0.6745`` of the filtered trace;
3. detect crossings of ``threshold * sigma`` (negative-going by default, see ``--polarity``);
4. align each event on its peak and ignore further crossings for a dead time (``--refractory-ms``).

Input: a CSV file with one column (voltage in µV) or two columns (time in s, voltage in µV), with or
without a header line, or an NPY file holding a 1-D array of voltages. Without a time column the
sampling rate is ``--rate``.

Outputs in ``--out``: ``spikes.csv`` (index,time_s,amplitude_uv), ``summary.json`` and ``spikes.png``.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labcloud_demo.progress import InputError, finish_run, log, make_output_folder, report, run_app
from labcloud_demo.traces import FloatArray, Trace, load_trace

IntArray = NDArray[np.intp]
MAD_TO_SIGMA = 0.6745  # median(|x|) of a standard normal variable
POLARITIES = ("neg", "pos", "both")


# ------------------------------------------------------------------------------------------ filtering


def _lowpass(cutoff_hz: float, rate_hz: float, half: int) -> FloatArray:
    """Hamming-windowed sinc low-pass with 2*half+1 taps and unit gain at DC."""
    m = np.arange(-half, half + 1, dtype=np.float64)
    fc = cutoff_hz / rate_hz
    h = 2.0 * fc * np.sinc(2.0 * fc * m) * np.hamming(2 * half + 1)
    return h / h.sum()


def bandpass_kernel(rate_hz: float, low_hz: float, high_hz: float) -> FloatArray:
    """Linear-phase FIR kernel passing ``low_hz``..``high_hz`` (0 disables that edge)."""
    nyquist = rate_hz / 2.0
    widths = []
    if low_hz > 0:
        widths.append(0.5 * low_hz)
    if high_hz > 0:
        widths.append(min(0.25 * high_hz, nyquist - high_hz))
    if not widths:
        return np.ones(1)
    half = math.ceil(3.3 * rate_hz / min(widths) / 2.0)  # Hamming: transition width ~ 3.3 fs / taps
    kernel = np.zeros(2 * half + 1)
    kernel[half] = 1.0
    if high_hz > 0:
        kernel = _lowpass(high_hz, rate_hz, half)
    if low_hz > 0:
        kernel = kernel - _lowpass(low_hz, rate_hz, half)
    return kernel


def zero_phase_filter(x: FloatArray, kernel: FloatArray) -> FloatArray:
    """Convolve with a symmetric kernel, centred (no delay), reflecting the edges; FFT overlap-add."""
    half = (len(kernel) - 1) // 2
    if half == 0:
        return x * kernel[0]
    if len(x) <= half:
        raise InputError(f"trace too short for the band-pass filter: {len(x)} samples, need more than {half}")
    padded = np.pad(x, half, mode="reflect")
    block = max(4 * len(kernel), 1 << 16)
    nfft = 1 << (block + len(kernel) - 2).bit_length()
    spectrum = np.fft.rfft(kernel, nfft)
    full = np.zeros(len(padded) + len(kernel) - 1)
    for start in range(0, len(padded), block):
        segment = padded[start : start + block]
        out = np.fft.irfft(np.fft.rfft(segment, nfft) * spectrum, nfft)[: len(segment) + len(kernel) - 1]
        full[start : start + len(out)] += out
    return full[2 * half : 2 * half + len(x)]


# ------------------------------------------------------------------------------------------ detection


def noise_sigma(x: FloatArray) -> float:
    """Robust noise standard deviation: median(|x|) / 0.6745."""
    return float(np.median(np.abs(x)) / MAD_TO_SIGMA)


def detect_spikes(
    x: FloatArray, threshold: float, polarity: str = "neg", dead_samples: int = 10, search_samples: int = 10
) -> IntArray:
    """Sample indices of spike peaks in the filtered trace ``x``.

    An event starts where the signal crosses ``threshold`` (below ``-threshold`` for ``neg``, above it
    for ``pos``, either for ``both``); its peak is the extremum before the signal comes back (at most
    ``search_samples`` later). Crossings within ``dead_samples`` after a peak belong to that spike.
    """
    if polarity == "neg":
        s = -x
    elif polarity == "pos":
        s = x
    elif polarity == "both":
        s = np.abs(x)
    else:
        raise ValueError(f"unknown polarity {polarity!r}")
    above = s > threshold
    ups = np.flatnonzero(above[1:] & ~above[:-1]) + 1
    downs = np.flatnonzero(~above[1:] & above[:-1]) + 1
    ends = np.searchsorted(downs, ups, side="right")
    peaks: list[int] = []
    last = -(10**18)
    for up, k in zip(ups.tolist(), ends.tolist(), strict=True):
        if up <= last + dead_samples:
            continue
        stop = int(downs[k]) if k < len(downs) else len(s)
        stop = max(up + 1, min(stop, up + max(search_samples, 1)))
        last = up + int(np.argmax(s[up:stop]))
        peaks.append(last)
    return np.asarray(peaks, dtype=np.intp)


# ------------------------------------------------------------------------------------- synthetic data


def spike_waveform(offset_s: FloatArray, amplitude_uv: float = 100.0) -> FloatArray:
    """Biphasic extracellular spike shape: a sharp trough at offset 0 and a slower positive lobe."""
    trough = np.exp(-0.5 * (offset_s / 0.15e-3) ** 2)
    lobe = np.exp(-0.5 * ((offset_s - 0.5e-3) / 0.35e-3) ** 2)
    return amplitude_uv * (0.35 * lobe - trough)


def make_synthetic_trace(
    duration_s: float,
    rate_hz: float,
    spike_times: Iterable[float],
    noise_uv: float,
    seed: int,
    *,
    amplitude_uv: float = 100.0,
    lfp_uv: float = 0.0,
    lfp_hz: float = 8.0,
) -> FloatArray:
    """A ground-truth trace in µV: white Gaussian noise, a spike (trough) at each of ``spike_times``
    and optionally a slow sinusoidal "LFP" of amplitude ``lfp_uv`` that the band-pass must remove."""
    n = round(duration_s * rate_hz)
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate_hz
    x = noise_uv * rng.standard_normal(n)
    if lfp_uv:
        x += lfp_uv * np.sin(2.0 * np.pi * lfp_hz * t + rng.uniform(0.0, 2.0 * np.pi))
    reach = math.ceil(2.5e-3 * rate_hz)
    for ts in spike_times:
        centre = round(ts * rate_hz)
        lo, hi = max(centre - reach, 0), min(centre + reach + 1, n)
        x[lo:hi] += spike_waveform(t[lo:hi] - ts, amplitude_uv)
    return x


# ------------------------------------------------------------------------------------------- outputs


def plot_spikes(
    path: Path, trace: Trace, filtered: FloatArray, peaks: IntArray, threshold: float, polarity: str
) -> None:
    """Save a figure: trace excerpt with threshold and detections, waveform overlay, ISI histogram."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rate = trace.rate_hz
    fig = plt.figure(figsize=(11, 7))
    grid = fig.add_gridspec(2, 2, left=0.07, right=0.98, bottom=0.08, top=0.95, hspace=0.35, wspace=0.2)

    ax = fig.add_subplot(grid[0, :])
    first = int(peaks[0]) if peaks.size else 0
    start = max(0, first - round(0.05 * rate))
    stop = min(len(filtered), start + round(0.5 * rate))
    times = trace.t0_s + np.arange(start, stop) / rate
    ax.plot(times, filtered[start:stop], color="0.3", lw=0.6, label="filtered trace")
    for sign in {"neg": (-1,), "pos": (1,), "both": (-1, 1)}[polarity]:
        ax.axhline(
            sign * threshold, color="tab:red", ls="--", lw=1, label=f"threshold {sign * threshold:.1f} µV"
        )
    shown = peaks[(peaks >= start) & (peaks < stop)]
    ax.plot(trace.t0_s + shown / rate, filtered[shown], "v", color="tab:blue", ms=6, label="detected spike")
    ax.set(
        xlabel="time (s)", ylabel="voltage (µV)", title=f"Trace excerpt ({len(shown)} of {len(peaks)} spikes)"
    )
    ax.legend(loc="upper right", fontsize=8)

    ax = fig.add_subplot(grid[1, 0])
    before, after = round(1e-3 * rate), round(2e-3 * rate)
    inside = peaks[(peaks >= before) & (peaks + after < len(filtered))]
    offsets_ms = np.arange(-before, after) / rate * 1e3
    if inside.size:
        snippets = filtered[inside[:, np.newaxis] + np.arange(-before, after)]
        overlay = snippets[:300]  # one NaN-separated line draws much faster than 300 lines
        gaps = np.full((len(overlay), 1), np.nan)
        ax.plot(
            np.tile(np.append(offsets_ms, np.nan), len(overlay)),
            np.hstack([overlay, gaps]).ravel(),
            color="tab:blue",
            lw=0.5,
            alpha=0.25,
        )
        ax.plot(offsets_ms, snippets.mean(axis=0), color="black", lw=2, label="mean")
        ax.legend(fontsize=8)
    ax.set(xlabel="time from peak (ms)", ylabel="voltage (µV)", title=f"Waveforms (n={inside.size})")

    ax = fig.add_subplot(grid[1, 1])
    isi_ms = np.diff(peaks) / rate * 1e3
    ax.hist(isi_ms[isi_ms < 100], bins=list(range(0, 101, 2)), color="tab:gray")
    ax.set(xlabel="inter-spike interval (ms)", ylabel="count", title="ISI histogram (< 100 ms)")

    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_spikes_csv(path: Path, trace: Trace, filtered: FloatArray, peaks: IntArray) -> None:
    """Write ``index,time_s,amplitude_uv`` for every detected spike."""
    with path.open("w", encoding="utf-8") as fh:
        fh.write("index,time_s,amplitude_uv\n")
        for index in peaks.tolist():
            fh.write(f"{index},{trace.t0_s + index / trace.rate_hz:.6f},{filtered[index]:.3f}\n")


# ----------------------------------------------------------------------------------------------- CLI


def _positive(text: str) -> float:
    value = float(text)
    if not value > 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _non_negative(text: str) -> float:
    value = float(text)
    if not value >= 0 or not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be zero or a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The command-line interface."""
    parser = argparse.ArgumentParser(
        prog="python -m labcloud_demo.spikes",
        description="Threshold spike detection on an extracellular voltage trace.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--trace", type=Path, required=True, help="CSV (voltage or time,voltage) or NPY file")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    parser.add_argument("--threshold", type=_positive, default=4.5, help="in units of noise sigma")
    parser.add_argument(
        "--polarity", choices=POLARITIES, default="neg", help="direction of the threshold crossing"
    )
    parser.add_argument("--refractory-ms", type=_non_negative, default=1.0, help="dead time after a spike")
    parser.add_argument(
        "--rate", type=_positive, default=10_000.0, help="sampling rate in Hz, if the file has no time column"
    )
    parser.add_argument("--low-hz", type=_non_negative, default=300.0, help="high-pass edge, 0 = none")
    parser.add_argument("--high-hz", type=_non_negative, default=3000.0, help="low-pass edge, 0 = none")
    return parser


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Detect spikes as described by ``args``, write the outputs and return the summary."""
    started = time.perf_counter()
    report(0.0)
    trace = load_trace(args.trace, args.rate)
    rate = trace.rate_hz
    log(
        f"loaded {args.trace.name}: {len(trace.voltage)} samples, {rate:g} Hz (from {trace.rate_source}), "
        f"{trace.duration_s:.3f} s"
    )
    report(0.2)

    low, high = args.low_hz, args.high_hz
    if low >= 0.5 * rate:
        raise InputError(f"--low-hz {low:g} must be below the Nyquist frequency ({rate / 2:g} Hz)")
    if high >= 0.5 * rate:
        high = 0.45 * rate
        log(f"low-pass edge lowered to {high:g} Hz (Nyquist frequency is {rate / 2:g} Hz)")
    if high and low >= high:
        raise InputError(f"band-pass edges must satisfy low < high, got {low:g} Hz and {high:g} Hz")
    kernel = bandpass_kernel(rate, low, high)
    centred = trace.voltage - np.median(trace.voltage)
    filtered = zero_phase_filter(centred, kernel)
    log(f"band-pass {low:g}-{high or rate / 2:g} Hz, zero-phase FIR with {len(kernel)} taps")
    report(0.5)

    sigma = noise_sigma(filtered)
    if sigma <= 0:
        raise InputError("the filtered trace is flat (noise sigma is 0); nothing to detect")
    threshold = args.threshold * sigma
    dead = round(args.refractory_ms * 1e-3 * rate)
    peaks = detect_spikes(filtered, threshold, args.polarity, dead, max(dead, round(0.5e-3 * rate)))
    firing_rate = len(peaks) / trace.duration_s
    log(
        f"noise sigma {sigma:.2f} µV, threshold {args.threshold:g} sigma = {threshold:.2f} µV "
        f"({args.polarity}), dead time {args.refractory_ms:g} ms"
    )
    log(f"detected {len(peaks)} spikes ({firing_rate:.2f} Hz)")
    report(0.7)

    make_output_folder(args.out)
    write_spikes_csv(args.out / "spikes.csv", trace, filtered, peaks)
    summary: dict[str, Any] = {
        "input": args.trace.name,
        "n_samples": len(trace.voltage),
        "n_spikes": len(peaks),
        "duration_s": trace.duration_s,
        "rate_hz": rate,
        "noise_sigma": sigma,
        "threshold": threshold,
        "threshold_sigma": args.threshold,
        "firing_rate_hz": firing_rate,
        "polarity": args.polarity,
        "refractory_ms": args.refractory_ms,
        "band_hz": [low, high or rate / 2],
        "filter_taps": len(kernel),
        "units": {"noise_sigma": "uV", "threshold": "uV", "amplitude": "uV"},
    }

    def plot(path: Path) -> None:
        plot_spikes(path, trace, filtered, peaks, threshold, args.polarity)

    return finish_run(args.out, summary, started, 0.8, plot, table="spikes.csv", figure="spikes.png")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point: exit status 0 on success, 2 on bad input."""
    return run_app(run, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
