"""What a worker is started with (:class:`WorkerConfig`: its server, token, capacity, labels, folders and
engine), why it may fail to start, its exit codes, and its logging."""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from labcloud.worker.status import StatusSource

if TYPE_CHECKING:  # (the runner of one job imports this module, and loads no settings unless it must)
    from labcloud.settings import ContainerSettings

EXIT_OK = 0
EXIT_UNREACHABLE = 1
EXIT_REVOKED = 3
REVOKED_MESSAGE = "the worker token was revoked or is wrong; stopping"


@dataclass
class WorkerConfig:
    server: str
    token: str
    cpus: float = field(default_factory=lambda: float(os.cpu_count() or 1))
    memory_mb: int = 0  # 0: 80% of this machine's memory
    gpus: int = 0
    labels: dict[str, str] = field(default_factory=dict)
    work_dir: Path = Path("labcloud-worker")
    sandbox: Literal["auto", "required", "off"] = "auto"
    job_user: str = "nobody"  # the account jobs run as when the worker runs as root
    token_file: Path | None = None  # hidden from jobs, like the work dir
    claim_wait_s: float = 20.0
    kill_grace_s: float = 5.0
    connect_tries: int = 7  # first heartbeat: tries before giving up (backoff in between: 8-16 s in all)
    extra_hidden: tuple[Path, ...] = ()
    containers: ContainerSettings | None = None  # the container engine (None: the LABCLOUD_* variables')
    status: StatusSource = field(default_factory=StatusSource)  # its own status, sent with each heartbeat

    def __post_init__(self) -> None:
        if not self.memory_mb:
            import psutil

            self.memory_mb = int(psutil.virtual_memory().total / 2**20 * 0.8)
        self.work_dir = self.work_dir.expanduser().resolve()

    def capacity(self) -> dict[str, float]:
        return {"cpus": float(self.cpus), "memory_mb": float(self.memory_mb), "gpus": float(self.gpus)}


class StartupError(Exception):
    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


def configure_logging(level: str = "info") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)-7s %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("httpcore").setLevel(logging.WARNING)
