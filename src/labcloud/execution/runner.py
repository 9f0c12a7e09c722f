"""The one job runner: stage the inputs, launch the command in its sandbox, follow it, collect the outputs,
report the end. The local executor, pull workers and the runners Slurm and Celery start all run jobs here.

It knows nothing of databases or HTTP: what it learns it tells a :class:`Reporter`. The local executor's
reporter writes to the database (:mod:`labcloud.execution.db_reporter`); everywhere else an HTTP
reporter reports over the worker API (:mod:`labcloud.worker.job`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

from labcloud import registry
from labcloud.execution import container_job, container_run, process
from labcloud.execution.attempt import AttemptDir, Collected, StagingError, Writer
from labcloud.execution.containers import Engine
from labcloud.execution.process import Handle, LaunchSpec, Limits, ProcessResult
from labcloud.execution.run_end import RunEnd
from labcloud.execution.sandbox import SandboxPolicy, unreachable
from labcloud.execution.watch import watch
from labcloud.registry.spec_parts import Resources

if TYPE_CHECKING:
    from labcloud.execution.task import TaskLayout

log = logging.getLogger(__name__)


@dataclass
class InputSource:
    """One input slot: the file's or folder's name, and how to write each file it brings."""

    name: str
    files: list[tuple[str, Writer]]  # (path under the slot's folder, writes its bytes into a file)


@dataclass
class JobPlan:
    """Everything a runner needs to run one attempt at a job, wherever it runs."""

    job_id: str
    attempt: int
    spec: registry.EntrypointSpec
    params: dict[str, Any]
    inputs: dict[str, InputSource]
    env: dict[str, str]
    resources: Resources
    folder: AttemptDir  # the attempt's own folder (created fresh by :func:`run`)
    log_path: Path  # the job's log, outside the job's reach
    sandbox: SandboxPolicy | None  # None: no sandbox (the writable folder is added by the runner)
    grace_s: float = 5.0
    log_times: bool = False  # the supervisor notes beside the log when its bytes came (the server's log)
    # The container engine of this machine (container apps), or why there is none.
    engine: Engine | None = None
    engine_problem: str = ""
    image: str | None = None  # the image's content id to run (a rerun's), else the one the spec names
    # Why commands may not run on this machine (the sandbox it must use does not work), else None. A
    # container app still runs: its engine isolates it.
    refused: str | None = None
    # Set when this runner's process is stopping: stop following and report nothing more, leaving the job
    # (and its folder) as they are, to be taken up again by the next one (:func:`resume`).
    detach: threading.Event | None = None
    # A task (GA4GH TES): its steps, files and outputs; its spec is a container entrypoint standing for it.
    task: TaskLayout | None = None

    @property
    def detached(self) -> bool:
        return self.detach is not None and self.detach.is_set()

    @property
    def in_container(self) -> bool:
        return self.spec.runtime == "container"


class Reporter(Protocol):
    """Where a run's news go. Calls come from the runner's thread; ``progress`` and ``cancel_requested``
    from the thread that follows the job."""

    def begin(self) -> bool:
        """The inputs are staged: may the command start? False when the job was cancelled meanwhile (it is
        then finished as cancelled) or is no longer this runner's (see :meth:`gone`)."""

    def launched(self, handle: Handle) -> None:
        """The command runs under this supervisor."""

    def progress(self, fraction: float) -> None: ...

    def cancel_requested(self) -> bool: ...

    def gone(self) -> bool:
        """The job is no longer this runner's (fenced, taken back): stop and report nothing more."""

    def keep(self, collected: Collected, succeeded: bool) -> str | None:
        """Store the collected outputs (of a run that ``succeeded``, or partial ones of a run that did not);
        a problem when they could not all be kept, else None."""

    def finish(self, end: RunEnd) -> None:
        """Report how the run ended (after :meth:`keep`)."""


def append_log(plan: JobPlan, line: str) -> None:
    """A line from labcloud itself (not the app) in the job's log."""
    plan.log_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(plan.log_path, "a", encoding="utf-8") as fh:
        fh.write(f"[labcloud] {line}\n")


def unplanned(reporter: Reporter, message: str, plan: JobPlan | None = None) -> RunEnd | None:
    """End an attempt that could not be planned here (its inputs were not found, its assignment is not
    understood) as staging_failed, before anything was made for it; ``message`` goes to the job's log when
    the plan that knows the log is there."""
    end = RunEnd("staging_failed", message=message)
    if plan is not None:
        append_log(plan, message)
        return _finish(plan, reporter, end)
    if reporter.gone():
        return None
    reporter.finish(end)
    return end


def cancelled_before_start(plan: JobPlan, reporter: Reporter) -> RunEnd | None:
    """End an attempt cancelled before anything was made for it (its cancel came while it was handed over)."""
    append_log(plan, "cancelled before it started")
    return _finish(plan, reporter, RunEnd("cancelled", message="cancelled before it started"))


def run(plan: JobPlan, reporter: Reporter) -> RunEnd | None:
    """Run one attempt from an empty folder to its reported end; the end, or None when the job was taken
    away (nothing more was reported)."""
    if plan.refused is not None and not plan.in_container:  # nothing may run here: nothing is made
        append_log(plan, plan.refused)
        return _finish(plan, reporter, RunEnd("start_failed", message=plan.refused))
    if plan.in_container:
        plan.folder = container_job.folder(plan)
    plan.folder.create()
    if plan.attempt > 1:
        append_log(plan, f"attempt {plan.attempt}")
    try:
        staged = _stage(plan)
    except StagingError as exc:
        append_log(plan, str(exc))
        return _finish(plan, reporter, RunEnd("staging_failed", message=str(exc)))
    if reporter.gone():
        return _abandon(plan)
    if plan.in_container:
        unavailable = container_job.engine_missing(plan)
        if unavailable is not None:
            append_log(plan, unavailable.message)
            return _finish(plan, reporter, unavailable)
    if plan.detached:  # never started: the next server finds no supervisor and runs it again
        return None
    if reporter.cancel_requested() or not reporter.begin():
        if reporter.gone():
            return _abandon(plan)
        append_log(plan, "cancelled before it started")
        return _finish(plan, reporter, RunEnd("cancelled", message="cancelled before it started"))
    offset = _log_size(plan)
    try:
        handle = process.launch(_launch_spec(plan, staged))
    except Exception as exc:
        message = f"the job could not be started: {_detail(exc)}"
        log.warning("job %s: %s", plan.job_id, message)
        append_log(plan, message)
        return _finish(plan, reporter, RunEnd("start_failed", message=message))
    reporter.launched(handle)
    return follow(plan, handle, reporter, offset)


def resume(plan: JobPlan, reporter: Reporter) -> RunEnd | None:
    """Take an attempt up again after labcloud restarted: follow its supervisor while it runs, then finish;
    an attempt that ended meanwhile is finished from its recorded result; one whose supervisor vanished
    without a result is lost."""
    if plan.in_container:
        plan.folder = container_job.folder(plan)
    handle = process.find_supervisor(plan.folder.status_path)
    if handle is not None:
        reporter.launched(handle)
        return follow(plan, handle, reporter, _log_size(plan))
    result = process.read_result(plan.folder.status_path)
    _remove_containers(plan)  # its supervisor is gone: so must its container be
    if result is None:
        message = "the job's process was lost while labcloud was down"
        append_log(plan, message)
        return _finish(plan, reporter, RunEnd("lost", message=message))
    return _settle(plan, reporter, result)


def follow(plan: JobPlan, handle: Handle, reporter: Reporter, log_offset: int) -> RunEnd | None:
    """Wait for the job to end (also one launched by an earlier server process), then finish it."""
    spec = LaunchSpec(
        argv=["-"],
        cwd=plan.folder.work,
        env={},
        log_path=plan.log_path,
        status_path=plan.folder.status_path,
        limits=Limits(),
        sandbox=None,
    )
    result = watch(handle, spec, _Observer(reporter), log_offset=log_offset, detach=plan.detach)
    if result is None or plan.detached:
        return None
    return _settle(plan, reporter, result)


def _settle(plan: JobPlan, reporter: Reporter, result: ProcessResult) -> RunEnd | None:
    if reporter.gone():
        return _abandon(plan)
    if result.outcome == "lost":  # nothing to collect: the server retries while attempts remain
        _remove_containers(plan)  # (its supervisor died: its container would run on unseen)
        append_log(plan, result.message)
        return _finish(plan, reporter, RunEnd("lost", message=result.message))
    problem = note = None
    if result.outcome not in ("start_failed", "image_unavailable"):  # nothing ran: nothing to collect
        collected = (
            plan.folder.collect(folder="root", wanted=plan.task.wanted)
            if plan.task is not None
            else plan.folder.collect()
        )
        problem = reporter.keep(collected, result.outcome == "exited" and result.exit_code == 0)
        for skipped in [collected.refused] if collected.refused else collected.skipped:
            append_log(plan, f"output not kept: {skipped}")
        note = collected.summary()
        if problem:
            append_log(plan, problem)
    usage = {
        "wall_s": round(result.wall_s, 3),
        "cpu_s": round(result.cpu_s, 3),
        "peak_memory_mb": round(result.peak_memory_mb, 1),
    }
    end = RunEnd(
        result.outcome,
        result.exit_code,
        result.message,
        usage,
        problem=problem,
        note=note,
        image=result.image,
        steps=result.steps if plan.task is not None else None,
    )
    return _finish(plan, reporter, end)


def _remove_containers(plan: JobPlan) -> None:
    """Remove the attempt's containers (each step's, for a task), whatever state they are in."""
    if plan.in_container and plan.engine is not None:
        steps = [None] if plan.task is None else list(range(len(plan.task.steps)))
        for step in steps:
            plan.engine.remove(container_run.container_name(plan.job_id, plan.attempt, step))


def _finish(plan: JobPlan, reporter: Reporter, end: RunEnd) -> RunEnd | None:
    if reporter.gone():
        return _abandon(plan)
    reporter.finish(end)
    _clean(plan)  # only now: the outputs are stored and the end is recorded
    return end


def _abandon(plan: JobPlan) -> RunEnd | None:
    """The job was taken away (nothing more is reported): its attempt's folder is of no use to anyone."""
    _clean(plan)
    return None


def _clean(plan: JobPlan) -> None:
    plan.folder.remove_work()
    for path in container_job.env_files(plan):
        path.unlink(missing_ok=True)


# --- the parts --------------------------------------------------------------------------------------------


def _stage(plan: JobPlan) -> dict[str, str]:
    """Write each input under work/inputs/<slot>/ (a private copy the job may change); its path there."""
    if plan.task is not None:
        _stage_task(plan, plan.task)
        return {}
    return {slot: plan.folder.stage(slot, src.name, src.files) for slot, src in plan.inputs.items()}


def _stage_task(plan: JobPlan, task: TaskLayout) -> None:
    """A task's inputs at their paths under work/root, and its writable folders made there."""
    from labcloud.execution.task import ROOT, parent, relative

    root = PurePosixPath(ROOT)
    for index, item in enumerate(task.inputs):
        folder = root / relative(parent(item.path))
        plan.folder.stage_at(folder, item.source.name, item.source.files, f"#{index} ({item.path})")
    for folder_path in task.writable_folders():
        plan.folder.make_folder(root / relative(folder_path))


def base_environment(plan: JobPlan) -> dict[str, str]:
    return {
        "PATH": os.environ.get("PATH", os.defpath),
        "HOME": str(plan.folder.work),
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "MPLBACKEND": "Agg",
        "LABCLOUD_JOB_ID": plan.job_id,
        "LABCLOUD_JOB_ATTEMPT": str(plan.attempt),
    }


def _launch_spec(plan: JobPlan, staged: dict[str, str]) -> LaunchSpec:
    if plan.task is not None:
        launch, _ = container_job.task_launch_spec(plan, _limits(plan))
        append_log(plan, f"a task of {len(plan.task.steps)} executor(s)")
        return launch
    if plan.in_container:
        launch, command = container_job.launch_spec(plan, staged, _limits(plan))
        kind = plan.engine.kind if plan.engine else "?"
        append_log(plan, f"$ {kind} run {plan.spec.image} " + " ".join(_quote(a) for a in command))
        return launch
    output = str(plan.folder.output)
    argv = registry.render_command(plan.spec, plan.params, staged, output, resources=plan.resources)
    env = base_environment(plan) | registry.job_environment(plan.spec, plan.params, staged, output, plan.env)
    sandbox = plan.sandbox
    if sandbox is not None:  # the attempt's work folder is the only one the job may write
        sandbox = SandboxPolicy(
            writable=(plan.folder.work,),
            hidden=sandbox.hidden,
            network=sandbox.network,
            readonly=sandbox.readonly,
            user=sandbox.user,
        )
    # Without a sandbox, run by root: the job still runs as the job user, who must reach its folder.
    user = plan.folder.user if sandbox is None else None
    if user is not None:
        problem = unreachable(plan.folder.output, user)
        if problem is not None:
            raise process.LaunchError(problem)
    spec = LaunchSpec(
        argv=argv,
        cwd=plan.folder.work,
        env=env,
        log_path=plan.log_path,
        log_times=plan.log_times,
        status_path=plan.folder.status_path,
        limits=_limits(plan),
        sandbox=sandbox,
        user=user,
    )
    append_log(plan, "$ " + " ".join(_quote(a) for a in spec.argv))
    return spec


def _limits(plan: JobPlan) -> Limits:
    resources = plan.resources
    return Limits(
        timeout_s=float(resources.timeout_s), memory_mb=int(resources.memory_mb), grace_s=plan.grace_s
    )


class _Observer:
    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter

    def on_output(self, text: str) -> None:
        pass  # the log file is the record; followers read it

    def on_progress(self, fraction: float) -> None:
        self.reporter.progress(fraction)

    def should_cancel(self) -> bool:
        return self.reporter.cancel_requested() or self.reporter.gone()


def _log_size(plan: JobPlan) -> int:
    try:
        return plan.log_path.stat().st_size
    except FileNotFoundError:
        return 0


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,@%+" for c in arg) else repr(arg)


def _detail(exc: BaseException) -> str:
    return getattr(exc, "detail", None) or str(exc) or exc.__class__.__name__
