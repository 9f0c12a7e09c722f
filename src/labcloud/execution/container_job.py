"""The container side of the runner: the attempt's folder for the container's user, and the engine's client
command line that runs the image (see :mod:`labcloud.execution.containers`)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from labcloud import registry
from labcloud.execution import containers
from labcloud.execution.attempt import AttemptDir
from labcloud.execution.process import LaunchSpec, Limits
from labcloud.execution.run_end import RunEnd
from labcloud.execution.sandbox import JobUser
from labcloud.registry.models import ContainerOptions

if TYPE_CHECKING:
    from labcloud.execution.runner import JobPlan


def folder(plan: JobPlan) -> AttemptDir:
    """The attempt's folder, owned by the container's user (as root; else labcloud's own, see create)."""
    options = plan.spec.container or ContainerOptions()
    if os.geteuid() != 0:
        return AttemptDir(plan.folder.path, None)
    uid, gid = options.uid_gid()
    return AttemptDir(plan.folder.path, JobUser(uid, gid, f"container user {uid}:{gid}"))


def env_file(plan: JobPlan) -> Path:
    return plan.folder.path / "container.env"


def engine_missing(plan: JobPlan) -> RunEnd | None:
    """The end of the run when no engine can run it here. (A missing image is the engine's to say: the run
    ends as image_unavailable with its words, and the image's content id comes from the container.)"""
    if plan.engine is not None:
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
        slot: f"{containers.INPUTS_MOUNT}/{Path(path).relative_to(plan.folder.inputs).as_posix()}"
        for slot, path in staged.items()
    }
    output = containers.OUTPUT_MOUNT
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
    run = containers.ContainerRun(
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
    client = engine.run_argv(run)
    launch = LaunchSpec(
        argv=client,
        cwd=plan.folder.work,
        env=engine.environment(),
        log_path=plan.log_path,
        status_path=plan.folder.status_path,
        limits=limits,
        sandbox=None,
        container=engine.control(run.name, plan.grace_s),
        engine_env=engine.environment(),
        program=argv[0],
        image=image,
    )
    return launch, argv


def _write_env_file(path: Path, env: dict[str, str]) -> None:
    """The container's variables, one NAME=value a line (0600: it may hold the job's token). The engines read
    a value to the end of its line, so a value with a line break cannot be passed."""
    for name, value in env.items():
        if "\n" in value or "\r" in value:
            raise ValueError(f"variable {name} holds a line break, which a container's variables cannot")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.writelines(f"{name}={value}\n" for name, value in env.items())
