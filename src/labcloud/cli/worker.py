"""``labcloud worker`` (run a worker on this machine), ``labcloud run-job`` (one job an engine started) and
``labcloud celery-worker``; ``labcloud workers`` (admin) is :mod:`labcloud.cli.workers`."""

from __future__ import annotations

import functools
import inspect
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from labcloud.cli.client.ui import (
    fail,
)
from labcloud.worker.runjob import DEFAULT_WORK_DIR

if TYPE_CHECKING:
    from labcloud.settings import ContainerSettings


TOKEN_ENV = "LABCLOUD_WORKER_TOKEN"
TOKEN_FILE_ENV = "LABCLOUD_WORKER_TOKEN_FILE"


SANDBOX_OPTION = typer.Option(
    "auto",
    "--sandbox",
    help="auto: bubblewrap when it works (never root without it); required: refuse to run jobs without "
    "it; off: never.",
)


JOB_USER_OPTION = typer.Option(
    "nobody",
    "--job-user",
    envvar="LABCLOUD_JOB_USER",
    help="The unprivileged account jobs run as when this runs as root (a name or UID[:GID]).",
)


CONTAINER_ENGINE_OPTION = typer.Option(
    None,
    "--container-engine",
    metavar="auto|docker|podman|apptainer|none",
    help="What runs container apps (else $LABCLOUD_CONTAINER_ENGINE, else auto: Docker when its daemon "
    "answers, else Podman).",
    show_default=False,
)


DOCKER_HOST_OPTION = typer.Option(
    None,
    "--docker-host",
    help="The Docker daemon's address (else $LABCLOUD_DOCKER_HOST, else $DOCKER_HOST, else the default).",
    show_default=False,
)


PODMAN_OPTIONS_OPTION = typer.Option(
    None,
    "--podman-options",
    metavar="LIST",
    help="Podman's global options, a JSON list or words (--podman-options='--root /srv/podman'); else "
    "$LABCLOUD_PODMAN_OPTIONS, else --runtime runc.",
    show_default=False,
)


CONTAINER_RUN_OPTIONS_OPTION = typer.Option(
    None,
    "--container-run-options",
    metavar="LIST",
    help="Added to every container run (only --ulimit=, --dns=, --add-host=, --log-opt=), a JSON list or "
    "words; else $LABCLOUD_CONTAINER_RUN_OPTIONS.",
    show_default=False,
)


KILL_GRACE_OPTION = typer.Option(5.0, "--kill-grace", min=0, help="Seconds between TERM and KILL.")
# Where a command's runner options stand among its options; @runner_options puts them there.
RUNNER_OPTIONS: Any = None
# The options of every command that runs jobs on this machine, in the order they are shown.
RUNNER_PARAMETERS = [
    inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=default, annotation=annotation)
    for name, default, annotation in (
        ("sandbox", SANDBOX_OPTION, str),
        ("job_user", JOB_USER_OPTION, str),
        ("container_engine", CONTAINER_ENGINE_OPTION, str | None),
        ("docker_host", DOCKER_HOST_OPTION, str | None),
        ("podman_options", PODMAN_OPTIONS_OPTION, str | None),
        ("container_run_options", CONTAINER_RUN_OPTIONS_OPTION, str | None),
        ("kill_grace", KILL_GRACE_OPTION, float),
    )
]


@dataclass(frozen=True)
class RunnerOptions:
    """How jobs run on this machine, as every command that runs them is told: the sandbox, the account
    jobs run as, the container engine, and the seconds between TERM and KILL."""

    sandbox: str
    job_user: str
    containers: ContainerSettings
    kill_grace: float


def runner_options(command: Callable[..., None]) -> Callable[..., None]:
    """``command`` with the runner options (:data:`RUNNER_PARAMETERS`) in place of its parameter
    ``runner``, which it gets checked, as :class:`RunnerOptions`."""
    signature = inspect.signature(command, eval_str=True)
    parameters: list[inspect.Parameter] = []
    for parameter in signature.parameters.values():
        parameters += RUNNER_PARAMETERS if parameter.name == "runner" else [parameter]

    @functools.wraps(command)
    def with_runner(**given: Any) -> None:
        sandbox, job_user, engine, docker_host, podman, run_options, kill_grace = (
            given.pop(p.name) for p in RUNNER_PARAMETERS
        )
        _check_sandbox_mode(sandbox)
        containers = _container_settings(engine, docker_host, podman, run_options)
        command(**given, runner=RunnerOptions(sandbox, job_user, containers, kill_grace))

    with_runner.__signature__ = signature.replace(parameters=parameters)  # type: ignore[attr-defined]
    with_runner.__annotations__ = {p.name: p.annotation for p in parameters}
    return with_runner


def _container_settings(
    engine: str | None, docker_host: str | None, podman_options: str | None, run_options: str | None
) -> ContainerSettings:
    from labcloud.execution import engine_options

    try:
        return engine_options.settings_from(engine, docker_host, podman_options, run_options)
    except ValueError as exc:
        raise fail(f"container engine settings: {exc}", 2) from None


def _check_sandbox_mode(mode: str) -> None:
    if mode not in ("auto", "required", "off"):
        raise fail(f"--sandbox {mode!r}: use auto, required or off", 2)


def parse_labels(items: list[str], option: str = "--label") -> dict[str, str]:
    labels: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise fail(f"{option} {item!r}: write it as KEY=VALUE", 2)
        labels[key.strip()] = value.strip()
    return labels


def _read_token(token: str | None, token_file: Path | None) -> str:
    if token:
        return token.strip()
    if token_file is not None:
        try:
            text = token_file.expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise fail(f"cannot read the token file {token_file}: {exc.strerror or exc}", 2) from None
        if text:
            return text.splitlines()[0].strip()
        raise fail(f"the token file {token_file} is empty", 2)
    raise fail(
        f"no worker token: set {TOKEN_ENV} (or --token-file FILE); an admin makes one with "
        "labcloud workers add NAME",
        2,
    )


@runner_options
def worker(
    server: str = typer.Option(
        ...,
        "--server",
        envvar=["LABCLOUD_WORKER_SERVER", "LABCLOUD_SERVER"],
        help="The labcloud server's URL.",
    ),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar=TOKEN_ENV,
        show_envvar=True,
        help=f"The worker token (lcw_...). Prefer ${TOKEN_ENV} or --token-file: arguments are visible in ps.",
    ),
    token_file: Path | None = typer.Option(
        None,
        "--token-file",
        envvar=TOKEN_FILE_ENV,
        help="A file holding the worker token (hidden from jobs).",
    ),
    cpus: float = typer.Option(0, "--cpus", min=0, help="CPUs jobs may fill (default: all)."),
    memory_mb: int = typer.Option(
        0, "--memory-mb", min=0, help="Memory jobs may fill (default: 80% of RAM)."
    ),
    gpus: int = typer.Option(0, "--gpus", min=0, help="GPUs jobs may use."),
    label: list[str] = typer.Option(
        [],
        "--label",
        metavar="KEY=VALUE",
        help="A label this worker reports (shown to admins); repeat. Which jobs it may take is decided by "
        "the labels an admin registered it with (labcloud workers add NAME --label ...), never by these.",
    ),
    work_dir: Path = typer.Option(
        Path("labcloud-worker"),
        "--work-dir",
        envvar="LABCLOUD_WORKER_DIR",
        help="Where job folders live (one worker per folder).",
    ),
    runner: RunnerOptions = RUNNER_OPTIONS,
    status_command: str | None = typer.Option(
        None,
        "--status-command",
        envvar="LABCLOUD_WORKER_STATUS_COMMAND",
        metavar="CMD",
        help="Run CMD (with /bin/sh) for each heartbeat: the JSON object it prints is this device's status "
        "(sensors, temperature...), shown on the devices page and checked against its labels' schemas.",
        show_default=False,
    ),
    status_file: Path | None = typer.Option(
        None,
        "--status-file",
        envvar="LABCLOUD_WORKER_STATUS_FILE",
        metavar="PATH",
        help="A JSON object in this file is the device's status, read for each heartbeat (with "
        "--status-command too, the command's fields win).",
        show_default=False,
    ),
    status_timeout: float = typer.Option(
        5.0,
        "--status-timeout",
        min=0.1,
        max=60,
        help="Seconds the status command may take (then it is killed).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run jobs from a labcloud server on this machine (pulls over HTTP(S); only outbound connections).

    SIGTERM or Ctrl-C: take no more jobs, exit when the running ones end; a second signal cancels them.

    Exit code 3: the server refused the token (revoked or wrong); 1: the server could not be reached.
    """
    from labcloud.worker.agent import WorkerAgent
    from labcloud.worker.config import WorkerConfig, configure_logging
    from labcloud.worker.status import StatusSource

    secret = _read_token(token, token_file)
    os.environ.pop(TOKEN_ENV, None)  # not inherited by anything this process starts
    configure_logging(log_level)
    config = WorkerConfig(
        server=server,
        token=secret,
        cpus=cpus or float(os.cpu_count() or 1),
        memory_mb=memory_mb,
        gpus=gpus,
        labels=parse_labels(label),
        work_dir=work_dir,
        sandbox=runner.sandbox,  # type: ignore[arg-type]
        job_user=runner.job_user,
        token_file=token_file.expanduser().resolve() if token_file else None,
        kill_grace_s=runner.kill_grace,
        containers=runner.containers,
        status=StatusSource(
            command=status_command or None,
            file=status_file.expanduser().resolve() if status_file else None,
            timeout_s=status_timeout,
        ),
        # a worker beside a labcloud server: its data dir and config stay out of the jobs' sight too
        extra_hidden=tuple(
            Path(os.environ[v]) for v in ("LABCLOUD_HOME", "LABCLOUD_CONFIG") if os.environ.get(v)
        ),
    )
    raise typer.Exit(WorkerAgent(config).run())


@runner_options
def run_job(
    server: str = typer.Option(..., "--server", help="The labcloud server's URL (its worker API)."),
    job: str = typer.Option(..., "--job", help="The job's id."),
    work_dir: Path = typer.Option(
        DEFAULT_WORK_DIR, "--work-dir", help="Where the job's folder is made (removed after)."
    ),
    runner: RunnerOptions = RUNNER_OPTIONS,
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run one job an engine started (a Slurm batch script runs this, or its lean twin
    ``python -m labcloud.worker.runjob``). The job token comes in $LABCLOUD_JOB_TOKEN. SIGTERM (scancel, a
    time limit) stops the job and reports nothing: the server learns from Slurm how it ended.

    Exit code 0: the job ran and was reported, or there was nothing to run; 1: the runner gave up on it.
    """
    from labcloud.worker.runjob import run_here

    raise typer.Exit(
        run_here(
            server,
            job,
            work_dir=work_dir,
            sandbox=runner.sandbox,
            job_user=runner.job_user,
            kill_grace=runner.kill_grace,
            log_level=log_level,
            containers=runner.containers,
        )
    )


@runner_options
def celery_worker(
    broker: str = typer.Option(
        "redis://127.0.0.1:6379/0",
        "--broker",
        envvar="LABCLOUD_CELERY_BROKER_URL",
        help="The broker the server publishes jobs to (redis://... or amqp://...).",
    ),
    queues: str = typer.Option(
        "",
        "--queues",
        "-Q",
        help="Comma-separated queues to take jobs from (default: every resource class of --prefix).",
    ),
    prefix: str = typer.Option("labcloud", "--prefix", envvar="LABCLOUD_CELERY_QUEUE_PREFIX"),
    concurrency: int = typer.Option(0, "--concurrency", "-c", min=0, help="Jobs at once (default: CPUs)."),
    name: str = typer.Option("", "--name", "-n", help="The Celery node name (default: labcloud@host)."),
    work_dir: Path = typer.Option(
        Path("labcloud-celery-worker"), "--work-dir", help="Where jobs are staged (one worker per folder)."
    ),
    runner: RunnerOptions = RUNNER_OPTIONS,
    wait_held: float = typer.Option(
        3600.0, "--wait-held", min=0, help="A job delivered again waits this long for a lost runner's lease."
    ),
    visibility_timeout: float = typer.Option(
        12 * 3600, "--visibility-timeout", envvar="LABCLOUD_CELERY_VISIBILITY_TIMEOUT_S", min=1
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Run Celery workers that take labcloud jobs from the broker and run each through the same runner
    as every other executor (reports go to the server's worker API)."""
    import socket

    from labcloud.execution import engine_options
    from labcloud.execution.executors.celery.task import queue_names
    from labcloud.worker import workdir
    from labcloud.worker.celery_app import create_app
    from labcloud.worker.config import configure_logging

    configure_logging(log_level)
    work_dir = work_dir.resolve()
    if workdir.lock(work_dir) is None:  # held until this process ends
        raise fail(f"another worker is using {work_dir}; give each worker its own --work-dir", 1)
    workdir.clean_leftovers(
        work_dir / "jobs", runner.kill_grace
    )  # a killed worker's jobs went to other runners
    os.environ.update(
        LABCLOUD_RUNNER_WORK_DIR=str(work_dir / "jobs"),
        LABCLOUD_RUNNER_TOP=str(work_dir),  # (locked 0700: a job user is let through it to its job)
        LABCLOUD_RUNNER_SANDBOX=runner.sandbox,
        LABCLOUD_RUNNER_JOB_USER=runner.job_user,
        LABCLOUD_RUNNER_KILL_GRACE=str(runner.kill_grace),
        LABCLOUD_RUNNER_WAIT_HELD_S=str(wait_held),
        **engine_options.environment(runner.containers),  # the tasks read them as every runner does
    )
    chosen = [q.strip() for q in queues.split(",") if q.strip()] or queue_names(prefix)
    app = create_app(broker, visibility_timeout)
    app.worker_main(
        [
            "worker",
            "--pool=threads",  # a job's process is supervised, not computed in here: threads suffice
            f"--concurrency={concurrency or os.cpu_count() or 1}",
            f"--queues={','.join(chosen)}",
            f"--hostname={name or 'labcloud@' + socket.gethostname()}",
            f"--loglevel={log_level.upper()}",
            "--without-gossip",
            "--without-mingle",
        ]
    )


def register(app: typer.Typer) -> None:
    app.command("worker", rich_help_panel="Compute")(worker)
    app.command("run-job", rich_help_panel="Compute")(run_job)
    app.command("celery-worker", rich_help_panel="Compute")(celery_worker)
