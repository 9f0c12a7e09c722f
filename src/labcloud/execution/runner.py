"""The one job runner: stage inputs, launch the command in its sandbox, follow it, collect the outputs.

It knows nothing of databases or HTTP. What it learns it tells a :class:`Reporter`: the local executor's
reporter writes to the database directly, a remote runner's reports over the worker API.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from labcloud import registry
from labcloud.execution import process
from labcloud.execution.process import Handle, LaunchSpec, Limits, ProcessResult
from labcloud.execution.sandbox import SandboxPolicy

log = logging.getLogger(__name__)


class StagingError(Exception):
    """An input could not be made available to the job."""


@dataclass
class InputSource:
    """One input slot: the file's or folder's name, and how to get each file it brings."""

    name: str
    files: list[tuple[str, Callable[[Path], None]]]  # (path under the slot's folder, writes the bytes there)


@dataclass
class JobPlan:
    """Everything a runner needs to run one job, wherever it runs."""

    job_id: str
    spec: registry.EntrypointSpec
    params: dict[str, Any]
    inputs: dict[str, InputSource]
    env: dict[str, str]
    resources: dict[str, Any]
    job_dir: Path  # control files (log, status) live here, out of the job's reach
    sandbox: SandboxPolicy | None
    grace_s: float = 5.0

    @property
    def work_dir(self) -> Path:
        return self.job_dir / "work"

    @property
    def output_dir(self) -> Path:
        return self.work_dir / "output"

    @property
    def log_path(self) -> Path:
        return self.job_dir / "job.log"

    @property
    def status_path(self) -> Path:
        return self.job_dir / "status.json"


class Reporter(Protocol):
    def progress(self, fraction: float) -> None: ...

    def cancel_requested(self) -> bool: ...


def append_log(plan: JobPlan, line: str) -> None:
    """A line from labcloud itself (not the app) in the job's log."""
    with open(plan.log_path, "a", encoding="utf-8") as fh:
        fh.write(f"[labcloud] {line}\n")


def stage(plan: JobPlan) -> dict[str, str]:
    """Write each input under work/inputs/<slot>/ (a private copy the job may change); return its path."""
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    for slot, source in plan.inputs.items():
        slot_dir = plan.work_dir / "inputs" / slot
        (slot_dir / source.name).parent.mkdir(parents=True, exist_ok=True)
        for rel, fetch in source.files:
            target = slot_dir / rel
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                fetch(target)
            except Exception as exc:
                detail = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise StagingError(f"input '{slot}' ({rel}) could not be staged: {detail}") from exc
        if not source.files:  # an empty folder
            (slot_dir / source.name).mkdir(parents=True, exist_ok=True)
        staged[slot] = str(slot_dir / source.name)
    return staged


def base_environment(plan: JobPlan) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(plan.work_dir),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
        "LABCLOUD_JOB_ID": plan.job_id,
    }


def launch_spec(plan: JobPlan, staged: dict[str, str]) -> LaunchSpec:
    output = str(plan.output_dir)
    argv = registry.render_command(plan.spec, plan.params, staged, output)
    env = base_environment(plan) | registry.job_environment(plan.spec, plan.params, staged, output, plan.env)
    return LaunchSpec(
        argv=argv,
        cwd=plan.work_dir,
        env=env,
        log_path=plan.log_path,
        status_path=plan.status_path,
        limits=Limits(
            timeout_s=float(plan.resources.get("timeout_s") or plan.spec.resources.timeout_s),
            memory_mb=int(plan.resources.get("memory_mb") or plan.spec.resources.memory_mb),
            grace_s=plan.grace_s,
        ),
        sandbox=plan.sandbox,
    )


class _Observer:
    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_output(self, text: str) -> None:
        pass  # the log file is the record; followers read it

    def on_progress(self, fraction: float) -> None:
        self.reporter.progress(fraction)

    def should_cancel(self) -> bool:
        return self.reporter.cancel_requested()


def launch(plan: JobPlan, staged: dict[str, str]) -> Handle:
    spec = launch_spec(plan, staged)
    append_log(plan, "$ " + " ".join(_quote(a) for a in spec.argv))
    return process.launch(spec)


def follow(plan: JobPlan, handle: Handle, reporter: Reporter, log_offset: int = 0) -> ProcessResult:
    """Wait for the job to end (also for a job launched by an earlier server process)."""
    spec = LaunchSpec(
        argv=["-"],
        cwd=plan.work_dir,
        env={},
        log_path=plan.log_path,
        status_path=plan.status_path,
        limits=Limits(),
        sandbox=None,
    )
    return process.watch(handle, spec, _Observer(reporter), log_offset=log_offset)


def log_size(plan: JobPlan) -> int:
    return plan.log_path.stat().st_size if plan.log_path.exists() else 0


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,@%+" for c in arg) else repr(arg)
