"""The test command, scripts/test.sh: both passes run and are reported, whichever fails.

The script runs from a scratch folder holding itself and stand-ins for its setup (scripts/ensure-system.sh,
pip, ruff and mypy do nothing there; ``.venv/bin/python`` hands everything else to this interpreter), on a
small test module whose tests pass or fail by the pass they run in.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from live_server import clean_env

REPO = Path(__file__).resolve().parent.parent


def run_test_command(tmp_path: Path, probe: str) -> subprocess.CompletedProcess[str]:
    """scripts/test.sh on a module of tests ``probe`` (Python source)."""
    root = tmp_path / "checkout"
    (root / "scripts").mkdir(parents=True)
    shutil.copy2(REPO / "scripts" / "test.sh", root / "scripts" / "test.sh")
    stand_ins = {
        "scripts/ensure-system.sh": "exit 0",
        ".venv/bin/ruff": "exit 0",
        ".venv/bin/mypy": "exit 0",
        ".venv/bin/python": f'if [ "$1 $2" = "-m pip" ]; then exit 0; fi\nexec "{sys.executable}" "$@"',
    }
    for name, body in stand_ins.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"#!/bin/sh\n{body}\n")
        (root / name).chmod(0o755)
    (root / "test_probe.py").write_text("import os\n\nPASS = os.environ['LABCLOUD_TEST_DB']\n\n" + probe)
    return subprocess.run(
        ["bash", "scripts/test.sh", "test_probe.py", "-p", "no:cacheprovider", "-n", "1"],
        cwd=root,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def fails_on(*passes: str) -> str:
    return f"def test_probe():\n    assert PASS not in {passes!r}\n"


@pytest.mark.parametrize(
    ("probe", "status", "summary"),
    [
        (fails_on("sqlite"), 1, "== SQLite: FAILED (exit status 1); PostgreSQL: passed"),
        (fails_on("postgresql"), 1, "== SQLite: passed; PostgreSQL: FAILED (exit status 1)"),
        (
            fails_on("sqlite", "postgresql"),
            1,
            "== SQLite: FAILED (exit status 1); PostgreSQL: FAILED (exit status 1)",
        ),
        (fails_on(), 0, "== SQLite: passed; PostgreSQL: passed"),
        # a selection with nothing for the PostgreSQL pass (all deselected there) is no failure
        (
            "if PASS == 'sqlite':\n\n    def test_probe():\n        pass\n",
            0,
            "== SQLite: passed; PostgreSQL: nothing to run",
        ),
    ],
    ids=["sqlite-fails", "postgresql-fails", "both-fail", "none-fails", "nothing-for-postgresql"],
)
def test_both_passes_run_and_are_summed_up(tmp_path: Path, probe: str, status: int, summary: str) -> None:
    r = run_test_command(tmp_path, probe)
    output = r.stdout + r.stderr
    assert r.returncode == status, output
    assert "== test suite on SQLite" in output and "== test suite on PostgreSQL" in output, output
    assert r.stdout.rstrip().splitlines()[-1] == summary, output
