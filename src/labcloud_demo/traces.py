"""Reading the voltage trace of the spike detector (:mod:`labcloud_demo.spikes`): a CSV file with one
column (voltage in µV) or two columns (time in s, voltage in µV), with or without a header line, or an NPY
file holding a 1-D array of voltages; without a time column the sampling rate is given."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from labcloud_demo.progress import InputError

FloatArray = NDArray[np.float64]


@dataclass
class Trace:
    """A uniformly sampled voltage trace."""

    voltage: FloatArray  # µV
    rate_hz: float
    t0_s: float = 0.0
    rate_source: str = "--rate"

    @property
    def duration_s(self) -> float:
        """Length of the trace in seconds."""
        return len(self.voltage) / self.rate_hz


def _number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _split(line: str) -> list[str]:
    for delimiter in (",", ";", "\t"):
        if delimiter in line:
            return [field.strip() for field in line.split(delimiter)]
    return line.split()


def _read_csv(path: Path) -> tuple[FloatArray, list[str] | None]:
    """Read a numeric table (comma, semicolon, tab or space separated) with an optional header row."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path.name} is not a text (CSV) file") from None
    rows: list[list[float]] = []
    header: list[str] | None = None
    for lineno, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = _split(line)
        values = [_number(field) for field in fields]
        if any(value is None for value in values):
            if not rows and header is None:  # a non-numeric first row is a header
                header = fields
                continue
            bad = next(field for field, value in zip(fields, values, strict=True) if value is None)
            raise InputError(f"{path.name} line {lineno}: non-numeric value {bad!r}")
        if rows and len(values) != len(rows[0]):
            raise InputError(
                f"{path.name} line {lineno}: expected {len(rows[0])} columns like the first row, "
                f"found {len(values)}"
            )
        rows.append([value for value in values if value is not None])
    if not rows:
        raise InputError(f"{path.name} contains no numeric rows")
    if header is not None and len(header) != len(rows[0]):
        raise InputError(f"{path.name}: the header names {len(header)} columns but rows have {len(rows[0])}")
    return np.asarray(rows, dtype=np.float64), header


def _read_npy(path: Path) -> FloatArray:
    try:
        data = np.load(path, allow_pickle=False)
    except (ValueError, EOFError):
        raise InputError(f"{path.name} is not a valid NPY file holding an array of numbers") from None
    if not isinstance(data, np.ndarray) or not np.issubdtype(data.dtype, np.number):
        raise InputError(f"{path.name} must hold a numeric array, found dtype {getattr(data, 'dtype', '?')}")
    if data.ndim == 1:
        data = data[:, np.newaxis]
    if data.ndim != 2:
        raise InputError(f"{path.name} must hold a 1-D array of voltages, found shape {data.shape}")
    return np.asarray(data, dtype=np.float64)


def load_trace(path: Path, rate_hz: float = 10_000.0) -> Trace:
    """Load a trace from CSV or NPY; ``rate_hz`` is used when the file has no time column."""
    if not path.is_file():
        raise InputError(f"cannot read trace {str(path)!r}: no such file")
    header: list[str] | None = None
    try:
        if path.suffix.lower() == ".npy":
            table = _read_npy(path)
        else:
            table, header = _read_csv(path)
    except OSError as exc:
        raise InputError(f"cannot read trace {str(path)!r}: {exc.strerror or exc}") from None

    ncols = table.shape[1]
    if ncols == 1:
        trace = Trace(voltage=table[:, 0].copy(), rate_hz=rate_hz)
    elif ncols == 2:
        time_col, volt_col = 0, 1
        if header is not None and header[1].lower().startswith("t") and not header[0].lower().startswith("t"):
            time_col, volt_col = 1, 0  # e.g. "voltage_uv,time_s"
        trace = _from_time_column(table[:, time_col], table[:, volt_col], path.name)
    else:
        names = f" ({', '.join(header)})" if header else ""
        raise InputError(
            f"{path.name} has {ncols} columns{names}; expected 1 (voltage) or 2 (time in s, voltage in µV)"
        )
    bad = np.flatnonzero(~np.isfinite(trace.voltage))
    if bad.size:
        raise InputError(f"{path.name}: voltage is not a finite number at sample {int(bad[0])}")
    return trace


def _from_time_column(times: FloatArray, voltage: FloatArray, name: str) -> Trace:
    if len(times) < 2:
        raise InputError(f"{name}: need at least 2 samples")
    if not np.all(np.isfinite(times)):
        raise InputError(f"{name}: the time column contains non-finite values")
    steps = np.diff(times)
    if np.any(steps <= 0):
        sample = int(np.flatnonzero(steps <= 0)[0]) + 1
        raise InputError(f"{name}: the time column must increase strictly (sample {sample})")
    dt = (times[-1] - times[0]) / (len(times) - 1)
    if np.max(np.abs(steps - dt)) > 0.25 * dt:
        raise InputError(f"{name}: the time column is not evenly sampled (gaps or jitter of more than 25%)")
    return Trace(voltage=voltage.copy(), rate_hz=1.0 / dt, t0_s=float(times[0]), rate_source="time column")
