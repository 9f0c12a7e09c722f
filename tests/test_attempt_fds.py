"""A job's attempt folder leaves no descriptor open behind it: a server runs thousands of jobs (a sweep), and
one left open per job soon passes what select() takes (1,024) and then the process's limit."""

from __future__ import annotations

import os
from pathlib import Path

from labcloud.execution.attempt import AttemptDir


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_collecting_outputs_closes_every_folder_it_opened(tmp_path: Path) -> None:
    before = open_descriptors()
    for i in range(50):
        attempt = AttemptDir(tmp_path / f"job-{i}" / "attempt-1").create()
        (attempt.work / "output" / "result.txt").write_text("42\n")
        found = attempt.collect()
        assert found.refused is None
        attempt.remove_work()
    assert open_descriptors() - before < 5
