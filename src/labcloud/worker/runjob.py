"""``python -m labcloud.worker.runjob``: the runner a Slurm batch script starts for one job.

The same as ``labcloud run-job`` (which calls :func:`run_here`), without the command line's own imports: it
starts in every batch job, and what it imports is time the job holds its Slurm allocation doing nothing.
The job token comes in ``$LABCLOUD_JOB_TOKEN``; the container engine's settings in the options (the Slurm
executor passes the server's) or the same ``LABCLOUD_*`` variables as the server's. SIGTERM (scancel, a time
limit) stops the job and reports nothing: the server learns from Slurm how it ended.

Exit code 0: the job ran and was reported, or there was nothing to run; 1: the runner gave up on it;
2: bad usage.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labcloud.settings import ContainerSettings

JOB_TOKEN_ENV = "LABCLOUD_JOB_TOKEN"
DEFAULT_WORK_DIR = Path("/tmp/labcloud-runs")


def run_here(
    server: str,
    job: str,
    *,
    work_dir: Path = DEFAULT_WORK_DIR,
    sandbox: str = "auto",
    job_user: str = "nobody",
    kill_grace: float = 5.0,
    log_level: str = "info",
    containers: ContainerSettings | None = None,
) -> int:
    from labcloud.execution import engine_options
    from labcloud.worker.api import WorkerApi
    from labcloud.worker.config import configure_logging
    from labcloud.worker.single import run_one

    token = os.environ.pop(JOB_TOKEN_ENV, "").strip()  # not inherited by the job
    if not token:
        print(
            f"labcloud run-job: no job token: ${JOB_TOKEN_ENV} is empty (the executor sets it)",
            file=sys.stderr,
        )
        return 2
    configure_logging(log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    api = WorkerApi(server)
    try:
        outcome = run_one(
            api,
            job,
            token,
            work_dir=work_dir,
            sandbox=sandbox,  # type: ignore[arg-type]
            job_user=job_user,
            grace_s=kill_grace,
            stop=stop,
            engines=engine_options.probe(containers) if containers else engine_options.probe_when_asked(),
        )
    finally:
        api.close()
    return 0 if not outcome.ran or outcome.state else 1


def main(argv: list[str] | None = None) -> int:
    # httpx imports its own command line (click, rich, pygments: some 50 ms) where those are installed, as
    # they are beside labcloud's CLI; this process never uses it. A None module makes that import fail, and
    # httpx then goes without (its documented fallback).
    sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
    parser = argparse.ArgumentParser(prog="labcloud run-job", description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", required=True, help="the labcloud server's URL (its worker API)")
    parser.add_argument("--job", required=True, help="the job's id")
    parser.add_argument("--work-dir", type=Path, default=DEFAULT_WORK_DIR)
    parser.add_argument("--sandbox", choices=["auto", "required", "off"], default="auto")
    parser.add_argument("--job-user", default="nobody", help="the account jobs run as when this runs as root")
    parser.add_argument("--kill-grace", type=float, default=5.0)
    parser.add_argument("--log-level", default="info")
    parser.add_argument("--container-engine", help="auto, docker, podman, apptainer or none")
    parser.add_argument("--docker-host")
    parser.add_argument("--podman-options", help="Podman's global options: a JSON list or shell words")
    parser.add_argument("--container-run-options", help="added to every container run (--ulimit=...)")
    args = parser.parse_args(argv)
    from labcloud.execution import engine_options

    given = (args.container_engine, args.docker_host, args.podman_options, args.container_run_options)
    containers = None  # none given (only a container job's batch script gives them): read when asked
    if any(option is not None for option in given):
        try:
            containers = engine_options.settings_from(*given)
        except ValueError as exc:
            parser.error(f"container engine: {exc}")
    return run_here(
        args.server,
        args.job,
        work_dir=args.work_dir,
        sandbox=args.sandbox,
        job_user=args.job_user,
        kill_grace=args.kill_grace,
        log_level=args.log_level,
        containers=containers,
    )


if __name__ == "__main__":
    sys.exit(main())
