"""The escape suite (tests/test_escapes.py) against container apps on the local executor, on Docker and
Podman: a container sees its two folders and nothing else of the host: not the data dir, other jobs'
folders, a host file or socket, nor the host's processes; what it leaves or plants in its output is never
followed, also by the attempt after it.

Every target is a canary in a scratch folder of the test, never a real system folder.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from conftest import Account
from jobs_helpers import wait_for_end
from labcloud.execution.process import Handle
from labcloud.settings import Settings
from live_server import eventually
from test_containers import container_names, engine, running, submit, write_container_app
from test_escapes import CANARY, assert_canary_untouched, make_canary
from testing.engines import EngineCLI

__all__ = ["engine", "running"]  # fixtures

pytestmark = [pytest.mark.containers, pytest.mark.db_agnostic]

Running = tuple[TestClient, Settings, EngineCLI]
STRING = {"type": "string"}
PROBED = ("canary", "home", "other", "sock")
CANARY_PARAM = {"type": "object", "properties": {"canary": STRING}, "required": ["canary"]}

# $1 a canary folder, $2 the data dir, $3 another job's folder, $4 a host socket. What the script prints on
# success is computed ($((...))), so that the command line the log shows never matches it.
PROBE = """
for f in "$1/secret.txt" "$1" "$2" "$3/secret.txt" "$3" "$4"; do
  cat "$f" 2>/dev/null && echo "LEAK-$((40+2)) read $f"
  ls "$f" >/dev/null 2>&1 && echo "LEAK-$((40+2)) listed $f"
done
test -e "$4" && echo "LEAK-$((40+2)) socket seen" || echo socket-hidden
nc -U "$4" </dev/null >/dev/null 2>&1 && echo "LEAK-$((40+2)) socket connected"
echo "processes $(ls /proc | grep -c '^[0-9]')"
cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '; echo
echo "probed-$((6*7))"
"""

# The output folder is a mount: the container cannot swap it for a link to a host folder.
OUTPUT_LINK = """
rm -rf /labcloud/output 2>&1; rmdir /labcloud/output 2>&1; ln -s "$1" /labcloud/output 2>&1
ln -sfn "$1" /labcloud/output 2>&1
echo "attacked-$((6*7))"
"""

# The first attempt plants links (to a host file, where its input and output were) and waits to be lost;
# the second must start from an empty folder and stage its input afresh.
PLANT = """
data=$(find /labcloud/inputs -type f | head -n 1)
if [ "$LABCLOUD_JOB_ATTEMPT" = 1 ]; then
  ln -sf "$1" "$data" 2>&1
  ln -s "$1" /labcloud/output/planted; ln -s "$1" /labcloud/output/copy.txt
  echo "planted-$((6*7))"; sleep 120
fi
rm -f /labcloud/output/copy.txt; cat "$data" > /labcloud/output/copy.txt
echo "attempt $LABCLOUD_JOB_ATTEMPT copied-$((6*7))"
"""


def _hostile_app(client: TestClient, settings: Settings, name: str, script: str, **entry: Any) -> None:
    """An app running ``script`` with the canary's path as its first argument, loaded at once."""
    command = ["sh", "-c", script, name, "{params.canary}"]
    write_container_app(settings.effective_apps_dir, name, command, parameters=CANARY_PARAM, **entry)
    _refresh(client)


def _refresh(client: TestClient) -> None:
    client.app.state.ctx.apps.refresh(force=True)  # type: ignore[attr-defined]


def _log(client: TestClient, job_id: str, user: Account) -> str:
    return client.get(f"/api/v1/jobs/{job_id}/logs", headers=user.headers).text


def _outputs(client: TestClient, job_id: str, user: Account) -> dict[str, bytes]:
    listed = client.get(f"/api/v1/jobs/{job_id}/outputs", headers=user.headers).json()
    return {
        o["path"]: client.get(f"/api/v1/jobs/{job_id}/outputs/{o['path']}", headers=user.headers).content
        for o in listed
    }


class CanarySocket:
    """A Unix socket in a scratch folder that counts who connects to it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(path))
        os.chmod(path, 0o777)  # anyone may connect: only its being out of reach keeps a job off it
        self.server.listen()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.server.close()


def test_a_container_sees_nothing_of_the_host(running: Running, user: Account, tmp_path: Path) -> None:
    client, settings, _ = running
    canary = make_canary(tmp_path / "canary")
    # Another job's folder in the data dir, with a secret in its output.
    other = settings.home / "jobs" / str(uuid.uuid4()) / "attempt-1" / "work" / "output"
    other.mkdir(parents=True)
    (other / "secret.txt").write_text(CANARY)
    os.chmod(tmp_path, 0o755)  # the folders on the way are open to all: the container still cannot see them
    sock = CanarySocket(tmp_path / "s")  # short: a socket's path is limited
    marker = f"PROC-CANARY-{uuid.uuid4().hex[:8]}"
    host = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)", marker])
    try:
        write_container_app(
            settings.effective_apps_dir,
            "x-probe",
            [
                "sh",
                "-c",
                PROBE,
                "x-probe",
                "{params.canary}",
                "{params.home}",
                "{params.other}",
                "{params.sock}",
            ],
            parameters={
                "type": "object",
                "properties": dict.fromkeys(PROBED, STRING),
                "required": list(PROBED),
            },
        )
        params = {
            "canary": str(canary),
            "home": str(settings.home),
            "other": str(other),
            "sock": str(sock.path),
        }
        job = wait_for_end(client, submit(client, user, "x-probe", params=params), user.headers)
        log = _log(client, job["id"], user)
        assert job["state"] == "succeeded" and "probed-42" in log, (job, log)
        assert "LEAK-42" not in log and CANARY not in log, log
        assert "socket-hidden" in log and sock.connections == 0, log
        assert marker not in log, log  # the host's processes are not in its /proc
        [count] = [line.split()[1] for line in log.splitlines() if line.startswith("processes ")]
        assert int(count) < 10, log  # its own few
        assert _outputs(client, job["id"], user) == {}
    finally:
        host.kill()
        host.wait()
        sock.close()
    assert_canary_untouched(canary)
    assert (other / "secret.txt").read_text() == CANARY


def test_a_container_cannot_swap_its_output_folder_for_a_link(
    running: Running, user: Account, tmp_path: Path
) -> None:
    client, settings, _ = running
    canary = make_canary(tmp_path / "canary")
    _hostile_app(client, settings, "x-outlink", OUTPUT_LINK)
    job_id = submit(client, user, "x-outlink", params={"canary": str(canary)})
    job = wait_for_end(client, job_id, user.headers)
    log = _log(client, job["id"], user)
    assert job["state"] == "succeeded" and "attacked-42" in log, (job, log)
    outputs = _outputs(client, job["id"], user)
    assert all(CANARY.encode() not in data for data in outputs.values()), outputs
    assert set(outputs) <= {"output"} and not any("secret" in name for name in outputs), outputs
    if outputs:  # (ln -sfn made a link inside)
        assert "output not kept: 'output': a symbolic link" in log, log
    assert_canary_untouched(canary)


def test_a_retried_container_job_starts_from_a_fresh_folder(
    running: Running, user: Account, tmp_path: Path
) -> None:
    client, settings, cli = running
    canary = make_canary(tmp_path / "canary")
    _hostile_app(
        client,
        settings,
        "x-plant",
        PLANT,
        inputs={"data": {"type": "file"}},
        resources={"cpus": 1, "memory_mb": 64, "timeout_s": 180},
    )
    r = client.put("/api/v1/files/in/data.txt", content=b"the input", headers=user.headers)
    assert r.status_code == 201, r.text
    params = {"canary": str(canary / "secret.txt")}
    job_id = submit(client, user, "x-plant", params=params, inputs={"data": "in/data.txt"})
    first = settings.home / "jobs" / job_id / "attempt-1"
    eventually(lambda: "planted-42" in _log(client, job_id, user), 60, "the first attempt to plant its links")
    handle = Handle.from_json((first / "handle.json").read_text())
    os.kill(handle.pid, signal.SIGKILL)  # its supervisor dies: the attempt is lost and the job retried
    job = wait_for_end(client, job_id, user.headers)
    log = _log(client, job_id, user)
    assert (job["state"], job["attempts"]) == ("succeeded", 2), (job, log)
    assert "attempt 2 copied-42" in log, log
    assert _outputs(client, job_id, user) == {"copy.txt": b"the input"}
    assert_canary_untouched(canary)
    assert not first.exists()  # the lost attempt's folder (and its links) went before the next one began
    # and its container, which ran on without its supervisor, was removed
    eventually(lambda: container_names(cli, job_id) == [], 30, "the lost attempt's container to be removed")
