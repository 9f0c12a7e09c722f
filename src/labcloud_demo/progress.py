"""Reporting helpers shared by the demo apps.

labcloud reads a job's stdout line by line: a line ``::progress <fraction>`` (0 to 1) sets the job's
progress bar, every other line is part of its log. Both are flushed at once so they show up live.
"""

from __future__ import annotations

import math
import sys


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
