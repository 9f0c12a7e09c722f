"""The container side of the runner: the attempt's folder for the container's user, and the engine's client
command line that runs the image (see :mod:`labcloud.execution.containers`); for a task
(:mod:`labcloud.execution.task`), one command line per step, which its supervisor runs in turn."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labcloud import registry
from labcloud.execution import container_run, containers
from labcloud.execution.attempt import AttemptDir
from labcloud.execution.process import LaunchSpec, Limits
from labcloud.execution.run_end import RunEnd
from labcloud.execution.sandbox import JobUser
from labcloud.execution.task import ROOT, relative
from labcloud.registry.spec_parts import ContainerOptions

if TYPE_CHECKING:
    from labcloud.execution.runner import JobPlan


def folder(plan: JobPlan) -> AttemptDir:
    """The attempt's folder, owned by the container's user (as root; else labcloud's own, see create)."""
    options = plan.spec.container or ContainerOptions()
    if os.geteuid() != 0:
        return AttemptDir(plan.folder.path, None)
    uid, gid = options.uid_gid()
    return AttemptDir(plan.folder.path, JobUser(uid, gid, f"container user {uid}:{gid}"))


def env_file(plan: JobPlan, step: int | None = None) -> Path:
    return plan.folder.path / ("container.env" if step is None else f"step-{step}.env")


def env_files(plan: JobPlan) -> list[Path]:
    """Every variables' file of the attempt (one per step of a task)."""
    steps = len(plan.task.steps) if plan.task is not None else 0
    return [env_file(plan), *(env_file(plan, i) for i in range(steps))]


def engine_missing(plan: JobPlan) -> RunEnd | None:
    """The end of the run when no engine can run it here. (A missing image is the engine's to say: the run
    ends as image_unavailable with its words, and the image's content id comes from the container.)"""
    if plan.engine is not None:
        if plan.task is not None and plan.engine.kind == "apptainer":
            return RunEnd("image_unavailable", message="tasks run in Docker or Podman, not in apptainer")
        return None
    why = plan.engine_problem or "no container engine is configured"
    return RunEnd("image_unavailable", message=f"no container engine can run this app here: {why}")


def launch_spec(plan: JobPlan, staged: dict[str, str], limits: Limits) -> tuple[LaunchSpec, list[str]]:
    """The engine's client in the foreground, running the image with the attempt's two folders mounted; and
    the command it runs in the container."""
    engine, options = plan.engine, plan.spec.container or ContainerOptions()
    assert engine is not None
    image = plan.image or plan.spec.image or ""  # a rerun's: the content id its job ran
    inside = {
        slot: f"{container_run.INPUTS_MOUNT}/{Path(path).relative_to(plan.folder.inputs).as_posix()}"
        for slot, path in staged.items()
    }
    output = container_run.OUTPUT_MOUNT
    argv = registry.render_command(plan.spec, plan.params, inside, output, None, plan.resources)
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
        name: registry.render_text(plan.spec, value, plan.params, inside, output, plan.resources)
        for name, value in options.env.items()
    }
    env |= registry.job_environment(plan.spec, plan.params, inside, output, plan.env)
    if os.geteuid() != 0:
        os.chmod(plan.folder.output, 0o777)  # not root: the container's user is no user of this host
    _write_env_file(env_file(plan), env)
    run = container_run.ContainerRun(
        job_id=plan.job_id,
        attempt=plan.attempt,
        image=image,
        command=argv,
        user=options.user,
        workdir=options.workdir,
        env_file=env_file(plan),
        inputs=plan.folder.inputs if staged else None,
        output=plan.folder.output,
        cpus=float(plan.resources.cpus),
        memory_mb=int(plan.resources.memory_mb),
        gpus=int(plan.resources.gpus),
        network=plan.spec.network,
    )
    control = engine.control(run.name, plan.grace_s)
    launch = _client_launch(plan, engine, limits, engine.run_argv(run), argv[0], image, container=control)
    return launch, argv


def _client_launch(
    plan: JobPlan,
    engine: containers.Engine,
    limits: Limits,
    argv: list[str],
    program: str,
    image: str,
    container: dict[str, list[str]] | None = None,
    steps: list[dict[str, Any]] | None = None,
) -> LaunchSpec:
    """The supervisor's launch of the engine's client (or, for a task, of each step's in turn)."""
    return LaunchSpec(
        argv=argv,
        cwd=plan.folder.work,
        env=engine.environment(),
        log_path=plan.log_path,
        log_times=plan.log_times,
        status_path=plan.folder.status_path,
        limits=limits,
        sandbox=None,
        container=container,
        engine_env=engine.environment(),
        program=program,
        image=image,
        steps=steps,
    )


def task_launch_spec(plan: JobPlan, limits: Limits) -> tuple[LaunchSpec, list[str]]:
    """The supervisor's steps for a task: each step's client command line (its folders mounted at their
    paths, its variables in a file of its own), and the command lines shown in the log."""
    engine, task = plan.engine, plan.task
    assert engine is not None and task is not None
    root = plan.folder.work / ROOT
    mounts = tuple((root / relative(m.path), m.path, m.readonly) for m in task.mounts())
    uid, gid = ContainerOptions(user=task.user).uid_gid()
    steps: list[dict[str, Any]] = []
    shown: list[str] = []
    for index, step in enumerate(task.steps):
        env = {"HOME": "/tmp", "TMPDIR": "/tmp", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"} | step.env
        _write_env_file(env_file(plan, index), env)
        run = container_run.ContainerRun(
            job_id=plan.job_id,
            attempt=plan.attempt,
            image=step.image,
            command=step.command,
            user=task.user,
            workdir=step.workdir,
            env_file=env_file(plan, index),
            inputs=None,
            output=None,
            cpus=float(plan.resources.cpus),
            memory_mb=int(plan.resources.memory_mb),
            network=task.network == "default",
            mounts=mounts,
            step=index,
            interactive=bool(step.stdin),
            network_mode="host" if task.network == "host" else "",
        )
        line = f"$ {engine.kind} run {step.image} " + " ".join(_quote(a) for a in step.command)
        shown.append(line)
        steps.append(
            {
                "argv": engine.run_argv(run),
                "container": engine.control(run.name, plan.grace_s),
                "program": step.command[0] if step.command else "?",
                "image": step.image,
                "shown": line,
                "ignore_error": step.ignore_error,
                "root": str(root),
                "stdin": relative(step.stdin) if step.stdin else "",
                "stdout": relative(step.stdout) if step.stdout else "",
                "stderr": relative(step.stderr) if step.stderr else "",
                "owner": [uid, gid] if os.geteuid() == 0 else None,
            }
        )
    first = steps[0]
    argv, program, image = first["argv"], first["program"], first["image"]
    launch = _client_launch(plan, engine, limits, argv, program, image, steps=steps)
    return launch, shown


def _quote(arg: str) -> str:
    return arg if arg and all(c.isalnum() or c in "-_./=:,@%+" for c in arg) else repr(arg)


def _write_env_file(path: Path, env: dict[str, str]) -> None:
    """The container's variables, one NAME=value a line (0600: it may hold the job's token). The engines read
    a value to the end of its line, so a value with a line break cannot be passed."""
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"variable {name} holds a line break, which a container's variables cannot")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(f"{name}={value}\n" for name, value in env.items())
