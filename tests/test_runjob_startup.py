"""The runner a Slurm batch script starts for each job (``python -m labcloud.worker.runjob``) pays its
imports in every batch job: it loads the container settings only when a container job asks for the engine,
and not httpx's command line. Settings it cannot take then become the reason there is no engine."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from labcloud.execution import engine_options
from labcloud.execution.engine_probe import DeferredProbe, EngineProbe


def test_the_runner_of_a_plain_job_loads_no_settings_and_no_http_command_line() -> None:
    # What run_here imports, in the order it does, in a fresh interpreter started as the batch script does.
    code = (
        "import sys, json\n"
        "from labcloud.worker import runjob\n"
        "sys.modules.setdefault('httpx._main', None)\n"  # as runjob.main does first
        "from labcloud.execution import engine_options\n"
        "from labcloud.worker.api import WorkerApi\n"
        "from labcloud.worker.config import configure_logging\n"
        "from labcloud.worker.single import run_one\n"
        "engine_options.probe_when_asked()\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('pydantic_settings', 'click', 'rich', 'pygments') or m == 'labcloud.settings')))\n"
    )
    loaded = json.loads(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    )
    assert loaded == [], loaded


def test_a_deferred_probe_reads_its_settings_when_first_asked() -> None:
    made: list[int] = []

    def make() -> EngineProbe:
        made.append(1)
        return EngineProbe("none")

    probe = DeferredProbe(make)
    assert made == []
    assert probe.get() == (None, "container apps are turned off here (container_engine = none)")
    probe.get()
    assert made == [1]  # once


def test_settings_a_runner_cannot_take_are_why_it_has_no_engine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABCLOUD_CONTAINER_ENGINE", "lxc")
    engine, why = engine_options.probe_when_asked().get()
    assert engine is None and why.startswith("container engine settings: container_engine"), why
