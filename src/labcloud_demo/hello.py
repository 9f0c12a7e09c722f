"""hello -- the smallest complete labcloud app.

Run it as::

    python -m labcloud_demo.hello --name Ada --times 3 --out results/

A labcloud app is any command that:

1. takes its parameters as command-line arguments (the app YAML maps ``{params.NAME}`` onto them),
2. prints log lines to stdout and ``::progress <fraction>`` lines to report progress,
3. writes its results into the folder given by ``--out`` (the ``{output}`` placeholder),
4. exits 0 on success, or non-zero with a message on stderr.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from labcloud_demo.progress import fail, log, report


def main(argv: Sequence[str] | None = None) -> int:
    """Greet ``--name`` ``--times`` times and write the greetings to ``<out>/greeting.txt``."""
    parser = argparse.ArgumentParser(prog="python -m labcloud_demo.hello", description="Greet someone.")
    parser.add_argument("--name", default="world", help="who to greet")
    parser.add_argument("--times", type=int, default=3, help="how many greetings (1-1000)")
    parser.add_argument("--out", type=Path, required=True, help="folder for the results")
    args = parser.parse_args(argv)

    # Check the input and fail with a clear message (non-zero exit, text on stderr).
    if not args.name.strip():
        return fail("--name must not be empty")
    if not 1 <= args.times <= 1000:
        return fail(f"--times must be between 1 and 1000, got {args.times}")

    lines = []
    for i in range(1, args.times + 1):
        line = f"Hello, {args.name}! ({i}/{args.times})"
        log(line)  # a log line, shown live in the job's log
        lines.append(line)
        report(i / args.times)  # "::progress 0.333" moves the job's progress bar

    # Results go into --out; the app YAML lists them under `outputs:` so users can download them.
    try:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "greeting.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    except OSError as exc:
        return fail(f"cannot write results to {args.out}: {exc}")
    log(f"wrote {args.out / 'greeting.txt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
