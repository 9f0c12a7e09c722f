"""What the demo apps share: progress and log lines, their errors, and how a run ends.

labcloud reads a job's stdout line by line: a line ``::progress <fraction>`` (0 to 1) sets the job's
progress bar, every other line is part of its log. Both are flushed at once so they show up live.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any


class InputError(Exception):
    """The input or the arguments cannot be used; the message is shown to the user."""


def report(fraction: float) -> None:
    """Print ``::progress <fraction>`` on its own line (clamped to [0, 1]) and flush stdout."""
    value = float(fraction)
    if math.isnan(value):
        raise ValueError("progress fraction is NaN")
    value = min(max(value, 0.0), 1.0)
    sys.stdout.write(f"::progress {value:.3f}\n")
    sys.stdout.flush()


def log(message: str) -> None:
    """Print one human-readable log line and flush stdout."""
    sys.stdout.write(f"{message}\n")
    sys.stdout.flush()


def fail(message: str, code: int = 2) -> int:
    """Print ``error: <message>`` to stderr and return ``code`` (for ``sys.exit(main())``)."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    return code


def make_output_folder(out: Path) -> None:
    """Create ``--out`` (and its parents); an :class:`InputError` when that is not possible."""
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create output folder {str(out)!r}: {exc.strerror or exc}") from None


def finish_run(
    out: Path,
    summary: dict[str, Any],
    started: float,
    progress: float,
    plot: Callable[[Path], None],
    *,
    table: str,
    figure: str,
) -> dict[str, Any]:
    """The end of a run: write ``summary.json`` and report ``progress``, draw ``figure`` with ``plot``, log
    what was written and the time since ``started``, report full progress. Returns ``summary``."""
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    report(progress)
    plot(out / figure)
    log(f"wrote {table}, summary.json, {figure} to {out} in {time.perf_counter() - started:.2f} s")
    report(1.0)
    return summary


def run_app(
    run: Callable[[argparse.Namespace], object], parser: argparse.ArgumentParser, argv: Sequence[str] | None
) -> int:
    """Parse ``argv`` and ``run``: exit status 0 on success, 2 with a message on stderr for unusable input
    or results that cannot be written."""
    args = parser.parse_args(argv)
    try:
        run(args)
    except InputError as exc:
        return fail(str(exc))
    except OSError as exc:
        return fail(f"cannot write results: {exc}")
    return 0
