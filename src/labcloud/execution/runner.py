"""The one job runner: stage the inputs, launch the command in its sandbox, follow it, collect the outputs,
report the end. The local executor, pull workers and the runners Slurm and Celery start all run jobs here.

It knows nothing of databases or HTTP: what it learns it tells a :class:`Reporter`. The local executor's
reporter writes to the database (:mod:`labcloud.execution.executors.local`); everywhere else an HTTP
reporter reports over the worker API (:mod:`labcloud.worker.job`).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from labcloud import registry
from labcloud.execution import containers, process
from labcloud.execution.attempt import AttemptDir, Collected, StagingError, Writer
from labcloud.execution.containers import Engine, ImageUnavailable
from labcloud.execution.process import Handle, LaunchSpec, Limits, ProcessResult
from labcloud.execution.sandbox import JobUser, SandboxPolicy
from labcloud.execution.watch import watch
from labcloud.registry.models import ContainerOptions, Resources
from labcloud.services.job_states import RunEnd

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
    # The container engine of this machine (container apps), or why there is none.
    engine: Engine | None = None
    engine_problem: str = ""
    image: str | None = None  # the image's content id to run (a rerun's), else the one the spec names
    # Set when this runner's process is stopping: stop following and report nothing more, leaving the job
    # (and its folder) as they are, to be taken up again by the next one (:func:`resume`).
    detach: threading.Event | None = None

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


def run(plan: JobPlan, reporter: Reporter) -> RunEnd | None:
    """Run one attempt from an empty folder to its reported end; the end, or None when the job was taken
    away (nothing more was reported)."""
    if plan.in_container:
        plan.folder = _container_folder(plan)
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
        unavailable = _resolve_image(plan)
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
        plan.folder = _container_folder(plan)
    handle = process.find_supervisor(plan.folder.status_path)
    if handle is not None:
        reporter.launched(handle)
        return follow(plan, handle, reporter, _log_size(plan))
    result = process.read_result(plan.folder.status_path)
    if plan.in_container and plan.engine is not None:  # its supervisor is gone: so must its container be
        plan.engine.remove(containers.container_name(plan.job_id, plan.attempt))
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
        append_log(plan, result.message)
        return _finish(plan, reporter, RunEnd("lost", message=result.message))
    problem = note = None
    if result.outcome != "start_failed":
        collected = plan.folder.collect()
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
    image = _recorded_image(plan)
    end = RunEnd(
        result.outcome, result.exit_code, result.message, usage, problem=problem, note=note, image=image
    )
    return _finish(plan, reporter, end)


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
    _env_file(plan).unlink(missing_ok=True)


# --- the parts --------------------------------------------------------------------------------------------


def _stage(plan: JobPlan) -> dict[str, str]:
    """Write each input under work/inputs/<slot>/ (a private copy the job may change); its path there."""
    return {slot: plan.folder.stage(slot, src.name, src.files) for slot, src in plan.inputs.items()}


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
    if plan.in_container:
        return _container_launch_spec(plan, staged)
    output = str(plan.folder.output)
    argv = registry.render_command(plan.spec, plan.params, staged, output)
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
    spec = LaunchSpec(
        argv=argv,
        cwd=plan.folder.work,
        env=env,
        log_path=plan.log_path,
        status_path=plan.folder.status_path,
        limits=_limits(plan),
        sandbox=sandbox,
    )
    append_log(plan, "$ " + " ".join(_quote(a) for a in spec.argv))
    return spec


def _limits(plan: JobPlan) -> Limits:
    resources = plan.resources
    return Limits(
        timeout_s=float(resources.timeout_s), memory_mb=int(resources.memory_mb), grace_s=plan.grace_s
    )


# --- container jobs ----------------------------------------------------------------------------------------


def _container_folder(plan: JobPlan) -> AttemptDir:
    """The attempt's folder, owned by the container's user (as root; else labcloud's own, see create)."""
    options = plan.spec.container or ContainerOptions()
    if os.geteuid() != 0:
        return AttemptDir(plan.folder.path, None)
    uid, gid = options.uid_gid()
    return AttemptDir(plan.folder.path, JobUser(uid, gid, f"container user {uid}:{gid}"))


def _image_file(plan: JobPlan) -> Path:
    return plan.folder.path / "image"


def _env_file(plan: JobPlan) -> Path:
    return plan.folder.path / "container.env"


def _resolve_image(plan: JobPlan) -> RunEnd | None:
    """Find the image's content id (and note it in the attempt's folder); the end of the run when the image
    or the engine is missing."""
    if plan.engine is None:
        why = plan.engine_problem or "no container engine is configured"
        return RunEnd("image_unavailable", message=f"no container engine can run this app here: {why}")
    wanted = plan.image or plan.spec.image
    assert wanted is not None
    try:
        image_id = plan.engine.image_id(wanted)
    except ImageUnavailable as exc:
        return RunEnd("image_unavailable", message=str(exc))
    _image_file(plan).write_text(image_id)
    return None


def _recorded_image(plan: JobPlan) -> str | None:
    if not plan.in_container:
        return None
    try:
        return _image_file(plan).read_text().strip() or None
    except OSError:
        return None


def _container_launch_spec(plan: JobPlan, staged: dict[str, str]) -> LaunchSpec:
    """The engine's client in the foreground, running the image with the attempt's two folders mounted."""
    engine, options = plan.engine, plan.spec.container or ContainerOptions()
    assert engine is not None
    inside = {
        slot: f"{containers.INPUTS_MOUNT}/{Path(path).relative_to(plan.folder.inputs).as_posix()}"
        for slot, path in staged.items()
    }
    output = containers.OUTPUT_MOUNT
    argv = registry.render_command(plan.spec, plan.params, inside, output, python=None)
    env = {
        "HOME": "/tmp",
        "TMPDIR": "/tmp",
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
        "LABCLOUD_JOB_ID": plan.job_id,
        "LABCLOUD_JOB_ATTEMPT": str(plan.attempt),
    }
    env |= {
        name: registry.render_text(plan.spec, value, plan.params, inside, output)
        for name, value in options.env.items()
    }
    env |= registry.job_environment(plan.spec, plan.params, inside, output, plan.env)
    if os.geteuid() != 0:
        os.chmod(plan.folder.output, 0o777)  # not root: the container's user is no user of this host
    _write_env_file(_env_file(plan), env)
    run = containers.ContainerRun(
        job_id=plan.job_id,
        attempt=plan.attempt,
        image=_recorded_image(plan) or plan.spec.image or "",
        command=argv,
        user=options.user,
        workdir=options.workdir,
        env_file=_env_file(plan),
        inputs=plan.folder.inputs if staged else None,
        output=plan.folder.output,
        cpus=float(plan.resources.cpus),
        memory_mb=int(plan.resources.memory_mb),
        gpus=int(plan.resources.gpus),
        network=plan.spec.network,
    )
    client = engine.run_argv(run)
    append_log(plan, f"$ {engine.kind} run {plan.spec.image} " + " ".join(_quote(a) for a in argv))
    return LaunchSpec(
        argv=client,
        cwd=plan.folder.work,
        env=engine.environment(),
        log_path=plan.log_path,
        status_path=plan.folder.status_path,
        limits=_limits(plan),
        sandbox=None,
        container=engine.control(run.name, plan.grace_s),
        engine_env=engine.environment(),
        program=argv[0],
    )


def _write_env_file(path: Path, env: dict[str, str]) -> None:
    """The container's variables, one NAME=value a line (0600: it may hold the job's token). The engines read
    a value to the end of its line, so a value with a line break cannot be passed."""
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"variable {name} holds a line break, which a container's variables cannot")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(f"{name}={value}\n" for name, value in env.items())


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
