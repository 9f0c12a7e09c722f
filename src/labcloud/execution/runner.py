"""The one job runner: stage inputs, launch the command in its sandbox, follow it, collect the outputs.

It knows nothing of databases or HTTP. What it learns it tells a :class:`Reporter`: the local executor's
reporter writes to the database directly, a remote runner's reports over the worker API.
"""

from __future__ import annotations

import logging
import os
import shutil
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
class JobPlan:
    """Everything a runner needs to run one job, wherever it runs."""

    job_id: str
    spec: registry.EntrypointSpec
    params: dict[str, Any]
    inputs: dict[str, Path]  # slot → source file or folder
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
    """Make each input available under work/inputs/<slot>/ (hard link when possible); return its path."""
    plan.output_dir.mkdir(parents=True, exist_ok=True)
    staged: dict[str, str] = {}
    for slot, source in plan.inputs.items():
        target_dir = plan.work_dir / "inputs" / slot
        target_dir.mkdir(parents=True, exist_ok=True)
        target = target_dir / source.name
        try:
            if source.is_dir():
                shutil.copytree(source, target, copy_function=_link_or_copy, dirs_exist_ok=True)
            else:
                _link_or_copy(str(source), str(target))
        except OSError as exc:
            raise StagingError(
                f"input '{slot}' ({source.name}) could not be staged: {exc.strerror or exc}"
            ) from exc
        staged[slot] = str(target)
    return staged


def _link_or_copy(src: str, dst: str) -> str:
    # A hard link shares the bytes, so the job could change the user's original: copy instead. Copies of
    # large inputs are what a later storage layer will avoid with read-only bind mounts.
    shutil.copy2(src, dst)
    return dst


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


def list_outputs(output_dir: Path) -> list[dict[str, Any]]:
    """Files the job left in its output folder, relative paths, sorted."""
    if not output_dir.is_dir():
        return []
    out = []
    for path in sorted(output_dir.rglob("*")):
        if path.is_file() and not path.is_symlink():
            stat = path.stat()
            out.append({"path": path.relative_to(output_dir).as_posix(), "size": stat.st_size})
    return out


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,@%+" for c in arg) else repr(arg)
