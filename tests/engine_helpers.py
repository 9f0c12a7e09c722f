"""What the Slurm and Celery tests share: the apps they run, and waiting on a job's history."""

from __future__ import annotations

import contextlib
import secrets
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

from conftest import kill_processes_under
from jobs_helpers import write_app
from live_server import LABCLOUD
from testing.daemons import clean_env
from worker_helpers import Cluster, WorkerProc, pull_server

SH = "sh"
SMALL = {"cpus": 1, "memory_mb": 64, "timeout_s": 120}
CELERY_LEASE_S = 3


def engine_apps(apps_dir: Path) -> None:
    write_app(
        apps_dir,
        "e-echo",
        [
            SH,
            "-c",
            'echo "hello from $LABCLOUD_JOB_ID"; sha256sum < "$LABCLOUD_INPUT_DATA" | cut -d" " -f1 '
            '> "$LABCLOUD_OUTPUT/data.sha256"; echo "::progress 1"',
        ],
        inputs={"data": {"type": "file"}},
        resources=SMALL,
    )
    write_app(
        apps_dir,
        "e-sleep",
        [
            SH,
            "-c",
            'echo "started $LABCLOUD_JOB_ID"; sleep "$LABCLOUD_PARAM_SECONDS"; '
            'echo done > "$LABCLOUD_OUTPUT/done.txt"; echo finished',
        ],
        parameters={"type": "object", "properties": {"seconds": {"type": "number", "default": 1}}},
        resources=SMALL,
    )
    write_app(apps_dir, "e-fail", [SH, "-c", "echo failing; exit 3"], resources=SMALL)
    write_app(apps_dir, "e-id", [SH, "-c", 'id; echo ok > "$LABCLOUD_OUTPUT/ok.txt"'], resources=SMALL)
    write_app(
        apps_dir,
        "e-big",
        [SH, "-c", "echo big"],
        resources={"cpus": 4, "memory_mb": 64, "timeout_s": 120},
    )
    write_app(
        apps_dir,
        "e-gpu",
        [SH, "-c", "echo on the gpu partition"],
        resources={"cpus": 1, "memory_mb": 64, "gpus": 0, "timeout_s": 120},
        queue="gpu",
    )


class CeleryCluster(Cluster):
    broker: str
    prefix: str

    def start_celery_worker(
        self,
        name: str,
        *queues: str,
        concurrency: int = 2,
        work_dir: Path | None = None,
        ready: bool = True,
        sandbox: str = "auto",  # (as root, "off" still runs jobs as nobody, who cannot reach tmp_path)
        options: tuple[str, ...] = (),
    ) -> WorkerProc:
        work_dir = work_dir or self.home / "celery" / name
        log_path = self.home / "celery" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        command = [
            *LABCLOUD,
            "celery-worker",
            "--broker",
            self.broker,
            "--prefix",
            self.prefix,
            "--concurrency",
            str(concurrency),
            "--name",
            f"{name}@{self.prefix}",
            "--work-dir",
            str(work_dir),
            "--sandbox",
            sandbox,
            "--kill-grace",
            "1",
            "--wait-held",
            "60",
        ]
        if queues:
            command += ["--queues", ",".join(f"{self.prefix}.{q}" for q in queues)]
        command += options
        with open(log_path, "wb") as log:
            process = subprocess.Popen(command, env=clean_env(), stdout=log, stderr=subprocess.STDOUT)
        worker = WorkerProc(name, process, log_path, work_dir)
        self.workers.append(worker)
        if ready:
            worker.wait_log(" ready.", timeout=60)
        return worker


@contextlib.contextmanager
def celery_cluster(
    home: Path, broker: str, apps: Callable[[Path], None] | None = None
) -> Iterator[CeleryCluster]:
    prefix = f"lctest-{secrets.token_hex(4)}"
    try:
        with pull_server(
            home,
            None,
            apps or engine_apps,
            lease_seconds=CELERY_LEASE_S,
            executor="celery",
            celery_broker_url=broker,
            celery_queue_prefix=prefix,
        ) as cluster:
            cluster.__class__ = CeleryCluster
            assert isinstance(cluster, CeleryCluster)
            cluster.broker, cluster.prefix = broker, prefix
            try:
                yield cluster
            finally:
                cluster.cancel_everything()
    finally:
        kill_processes_under(home)
