"""The bundled demo apps (labcloud_demo.hello/spikes/lif) and their app YAML files.

Every app runs as a real subprocess (``python -m labcloud_demo.<name>``), as labcloud would run it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import subprocess
import sys
from itertools import pairwise
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
import yaml

from labcloud_demo.spikes import make_synthetic_trace

SRC = Path(__file__).resolve().parents[1] / "src"
APPS_DIR = SRC / "labcloud" / "demo_apps"
SAMPLES = SRC / "labcloud_demo" / "samples"
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PLACEHOLDER = re.compile(r"\{([^{}]*)\}")
PROGRESS_LINE = re.compile(r"::progress (\d+(?:\.\d+)?)")


def run_app(module: str, *args: object, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run ``python -m labcloud_demo.<module> args...`` with the source tree on PYTHONPATH."""
    return run_argv([sys.executable, "-m", f"labcloud_demo.{module}", *map(str, args)], timeout=timeout)


def run_argv(argv: list[str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run an argv list with ``PYTHONPATH`` pointing at the source tree."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)


def progress_values(stdout: str) -> list[float]:
    """Fractions of all ``::progress`` lines; every such line must have the exact form."""
    values = []
    for line in stdout.splitlines():
        if line.startswith("::progress"):
            match = PROGRESS_LINE.fullmatch(line)
            assert match, f"malformed progress line {line!r}"
            values.append(float(match.group(1)))
    return values


def assert_progress(stdout: str, at_least: int = 2, at_most: int = 1000) -> list[float]:
    """Progress lines exist, lie in [0, 1], never go backwards and end at 1."""
    values = progress_values(stdout)
    assert at_least <= len(values) <= at_most, f"{len(values)} progress lines"
    assert all(0.0 <= v <= 1.0 for v in values)
    assert all(b >= a for a, b in pairwise(values))
    assert values[-1] == 1.0
    return values


def assert_ok(proc: subprocess.CompletedProcess[str]) -> None:
    """The app exited 0 (shows its stderr otherwise)."""
    assert proc.returncode == 0, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"


def assert_png(path: Path) -> None:
    """``path`` is a non-trivial PNG file."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 5_000


def read_spikes(out: Path) -> np.ndarray:
    """Rows of spikes.csv as an (n, 3) array: index, time_s, amplitude_uv."""
    lines = (out / "spikes.csv").read_text().splitlines()
    assert lines[0] == "index,time_s,amplitude_uv"
    return np.array([[float(v) for v in line.split(",")] for line in lines[1:]]).reshape(-1, 3)


def ground_truth_times(n: int, duration_s: float, seed: int) -> np.ndarray:
    """``n`` sorted spike times at least 5 ms apart and 10 ms away from the ends."""
    rng = np.random.default_rng(seed)
    slots = rng.choice(np.arange(0.01, duration_s - 0.02, 0.008), size=n, replace=False)
    return np.sort(slots + rng.uniform(0.0, 0.003, n))


def recall_and_false_positives(
    detected: np.ndarray, truth: np.ndarray, tol: float = 0.5e-3
) -> tuple[float, float]:
    """Share of true spikes found within ``tol`` and share of detections matching no true spike."""
    assert detected.size, "no spikes detected"
    distance = np.abs(detected[:, np.newaxis] - truth[np.newaxis, :])
    return float(np.mean(distance.min(axis=0) <= tol)), float(np.mean(distance.min(axis=1) > tol))


# --------------------------------------------------------------------------------------------- hello


def test_hello_greets_n_times_with_progress(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "out"  # --out is created if missing
    proc = run_app("hello", "--name", "Ada Lovelace", "--times", 4, "--out", out)
    assert_ok(proc)
    greetings = (out / "greeting.txt").read_text().splitlines()
    assert len(greetings) == 4
    assert all("Ada Lovelace" in line for line in greetings)
    values = assert_progress(proc.stdout, at_least=4)
    assert all(b > a for a, b in pairwise(values))
    assert sum("Ada Lovelace" in line for line in proc.stdout.splitlines()) >= 4


def test_hello_rejects_bad_times(tmp_path: Path) -> None:
    proc = run_app("hello", "--times", 0, "--out", tmp_path)
    assert proc.returncode != 0
    assert "--times" in proc.stderr
    assert not (tmp_path / "greeting.txt").exists()


# -------------------------------------------------------------------------------------------- spikes


def test_spikes_finds_ground_truth_spikes(tmp_path: Path) -> None:
    rate, duration, t0 = 10_000.0, 3.0, 5.0
    truth = ground_truth_times(150, duration, seed=11)
    voltage = make_synthetic_trace(duration, rate, truth, 10.0, 11, amplitude_uv=80.0, lfp_uv=200.0)
    trace = tmp_path / "rec.csv"
    times = t0 + np.arange(voltage.size) / rate  # the recording starts at t = 5 s
    np.savetxt(
        trace, np.column_stack([times, voltage]), fmt="%.5f", delimiter=",", header="time_s,voltage_uv"
    )

    out = tmp_path / "out"
    proc = run_app("spikes", "--trace", trace, "--threshold", 4.5, "--out", out)
    assert_ok(proc)
    assert_progress(proc.stdout, at_least=3, at_most=100)

    spikes = read_spikes(out)
    recall, false_positives = recall_and_false_positives(spikes[:, 1], truth + t0)
    assert recall >= 0.95
    assert false_positives <= 0.05
    np.testing.assert_allclose(spikes[:, 1], t0 + spikes[:, 0] / rate, atol=1e-6)
    assert np.all(spikes[:, 2] < 0)  # negative-going spikes

    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_spikes"] == len(spikes)
    assert summary["rate_hz"] == pytest.approx(rate)
    assert summary["duration_s"] == pytest.approx(duration)
    assert summary["firing_rate_hz"] == pytest.approx(len(spikes) / duration)
    # white noise of 10 µV through a 300-3000 Hz band keeps about sqrt(2700 / 5000) of its sigma
    assert 6.0 < summary["noise_sigma"] < 10.0
    assert summary["threshold"] == pytest.approx(4.5 * summary["noise_sigma"])
    assert_png(out / "spikes.png")


@pytest.mark.parametrize("kind", ["csv-one-column", "npy-inverted-pos"])
def test_spikes_other_formats_and_options(tmp_path: Path, kind: str) -> None:
    rate, duration = 20_000.0, 2.0  # no time column: the rate comes from --rate
    truth = ground_truth_times(60, duration, seed=5)
    voltage = make_synthetic_trace(duration, rate, truth, 8.0, 5, amplitude_uv=70.0)
    if kind == "csv-one-column":
        trace, extra = tmp_path / "trace.txt", []
        np.savetxt(trace, voltage, fmt="%.3f")
    else:
        trace, extra = tmp_path / "trace.npy", ["--polarity", "pos"]
        np.save(trace, -voltage.astype(np.float32))
    out = tmp_path / "out"
    proc = run_app("spikes", "--trace", trace, "--rate", rate, *extra, "--out", out)
    assert_ok(proc)
    spikes = read_spikes(out)
    recall, false_positives = recall_and_false_positives(spikes[:, 1], truth)
    assert recall >= 0.95
    assert false_positives <= 0.05
    assert json.loads((out / "summary.json").read_text())["rate_hz"] == pytest.approx(rate)


def test_spikes_on_bundled_npy_sample(tmp_path: Path) -> None:
    truth = np.loadtxt(SAMPLES / "spike_times.txt")
    proc = run_app("spikes", "--trace", SAMPLES / "trace.npy", "--out", tmp_path)
    assert_ok(proc)
    spikes = read_spikes(tmp_path)
    assert recall_and_false_positives(spikes[:, 1], truth) == (1.0, 0.0)


BAD_INPUTS = {
    "missing file": (None, "no such file"),
    "non-numeric csv": ("time_s,voltage_uv\n0.0,1.5\n0.1,abc\n", "non-numeric"),
    "three columns": ("a,b,c\n1,2,3\n4,5,6\n", "3 columns"),
    "ragged rows": ("1.0,2.0\n3.0\n", "columns"),
    "no data": ("voltage_uv\n", "no numeric rows"),
    "time going back": ("0.0,1\n0.2,2\n0.1,3\n", "increase"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_spikes_rejects_bad_input(tmp_path: Path, case: str) -> None:
    content, message = BAD_INPUTS[case]
    trace = tmp_path / "trace.csv"
    if content is not None:
        trace.write_text(content)
    out = tmp_path / "out"
    proc = run_app("spikes", "--trace", trace, "--out", out)
    assert proc.returncode != 0
    assert "error:" in proc.stderr and message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (out / "spikes.csv").exists()


def test_spikes_rejects_multidimensional_npy(tmp_path: Path) -> None:
    trace = tmp_path / "trace.npy"
    np.save(trace, np.zeros((4, 5, 6)))
    proc = run_app("spikes", "--trace", trace, "--out", tmp_path / "out")
    assert proc.returncode != 0
    assert "1-D" in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------------- lif


def test_lif_rates_increase_with_drive(tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = [
        "--sweep-param",
        "drive",
        "--values",
        "4,6,9",
        "--neurons",
        200,
        "--duration-ms",
        300,
        "--seed",
        1,
    ]
    proc = run_app("lif", *args, "--out", out)
    assert_ok(proc)
    assert_progress(proc.stdout, at_least=10, at_most=101)

    lines = (out / "rates.csv").read_text().splitlines()
    assert lines[0] == "drive_khz,rate_exc_hz,rate_inh_hz"
    rows = np.array([[float(v) for v in line.split(",")] for line in lines[1:]])
    assert rows.shape == (3, 3)
    assert rows[:, 0].tolist() == [4.0, 6.0, 9.0]
    assert np.all(rows[:, 1:] >= 0)
    assert np.all(np.diff(rows[:, 1]) > 0) and np.all(np.diff(rows[:, 2]) > 0)
    assert rows[-1, 1] > 10.0  # well above threshold drive the network really fires

    summary = json.loads((out / "summary.json").read_text())
    assert summary["sweep_param"] == "drive"
    assert summary["values"] == [4.0, 6.0, 9.0]
    assert summary["rate_exc_hz"] == pytest.approx(rows[:, 1].tolist(), abs=1e-3)
    assert_png(out / "raster.png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--values", "1,2", "--start", "1"], "not both"),
        (["--values", "abc"], "--values"),
        (["--neurons", "3"], "--neurons"),
    ],
)
def test_lif_rejects_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    proc = run_app("lif", *args, "--out", tmp_path / "out")
    assert proc.returncode != 0
    assert message in proc.stderr and "Traceback" not in proc.stderr


# ----------------------------------------------------------------------------------------- app YAML


def load_apps() -> dict[str, dict[str, Any]]:
    """All demo app YAML files by file stem."""
    files = sorted(APPS_DIR.glob("*.yaml"))
    return {path.stem: yaml.safe_load(path.read_text(encoding="utf-8")) for path in files}


def entrypoints(app: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(name, spec) of every entrypoint of every version."""
    return [
        (name, spec) for version in app["versions"].values() for name, spec in version["entrypoints"].items()
    ]


def test_app_yaml_files_are_complete_and_consistent() -> None:
    apps = load_apps()
    assert set(apps) == {"hello", "spikes", "lif", "wordcount"}
    expected_entrypoint = {"hello": "greet", "spikes": "detect", "lif": "simulate"}
    # The Python demos; wordcount, the container demo, runs in tests/test_containers.py.
    for stem, app in ((stem, app) for stem, app in apps.items() if stem != "wordcount"):
        assert app["name"] == stem
        assert app["title"] and app["description"]
        assert list(app["versions"]) == ["1.0"]
        eps = entrypoints(app)
        assert [name for name, _ in eps] == [expected_entrypoint[stem]]
        for _, spec in eps:
            assert spec["description"]
            assert spec["runtime"] == "process"
            command = spec["command"]
            assert all(isinstance(arg, str) for arg in command)
            assert command[:2] == ["python", "-m"]
            assert importlib.util.find_spec(command[2]) is not None

            schema = spec["parameters"]
            jsonschema.Draft202012Validator.check_schema(schema)
            assert schema["type"] == "object"
            properties = schema["properties"]
            for name, prop in properties.items():
                assert "type" in prop and prop.get("description"), name
            defaults = {name: prop["default"] for name, prop in properties.items() if "default" in prop}
            jsonschema.validate(defaults, schema)

            inputs = spec["inputs"]
            assert all(slot["type"] == "file" and slot.get("description") for slot in inputs.values())
            for arg in command:
                for ref in PLACEHOLDER.findall(arg):
                    kind, _, name = ref.partition(".")
                    if ref == "output":
                        continue
                    if kind == "params":
                        assert name in properties, f"{stem}: {{{ref}}} is not a declared parameter"
                        prop = properties[name]
                        assert "default" in prop or name in schema.get("required", []), ref
                    else:
                        assert kind == "inputs" and name in inputs, f"{stem}: unknown placeholder {{{ref}}}"
                        assert inputs[name].get("required") is True, ref
            assert any("{output}" in arg for arg in command)

            assert spec["outputs"] and all(isinstance(item, str) for item in spec["outputs"])
            assert spec["env"] == []
            assert spec["resources"] == {"cpus": 1, "memory_mb": 512, "gpus": 0, "timeout_s": 600}


@pytest.mark.parametrize("stem", ["hello", "spikes", "lif"])
def test_app_yaml_command_runs_with_defaults(tmp_path: Path, stem: str) -> None:
    """Fill the YAML command the way the platform does, with default parameters, and run it."""
    ((_, spec),) = entrypoints(load_apps()[stem])
    params = {name: prop["default"] for name, prop in spec["parameters"]["properties"].items()}
    if stem == "lif":
        params["duration_ms"] = 150  # keep the test short; the argv is what matters here
    values = {f"params.{name}": str(value) for name, value in params.items()}
    values["inputs.trace"] = str(SAMPLES / "trace.csv")
    out = tmp_path / "out"
    values["output"] = str(out)
    argv = [PLACEHOLDER.sub(lambda m: values[m.group(1)], arg) for arg in spec["command"]]
    argv[0] = sys.executable  # the platform runs a leading "python" with its own interpreter

    proc = run_argv(argv)
    assert_ok(proc)
    assert_progress(proc.stdout, at_most=101)
    for pattern in spec["outputs"]:
        assert list(out.glob(pattern)), f"{stem}: no output matches {pattern}"
    if stem == "spikes":
        truth = np.loadtxt(SAMPLES / "spike_times.txt")
        assert recall_and_false_positives(read_spikes(out)[:, 1], truth) == (1.0, 0.0)
