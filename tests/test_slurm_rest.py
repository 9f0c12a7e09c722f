"""The slurmrestd client: what it sends and what it makes of slurmrestd's answers (exit codes, errors, the
user's jobs), on a fake slurmrestd. The real one is driven end to end by tests/test_slurm.py, whose every
test also runs through slurmrestd.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from labcloud.execution.executors.engine import EngineRefused
from labcloud.execution.executors.slurm.batch import BatchJob, Ended
from labcloud.execution.executors.slurm.rest import SlurmRest, exit_code, extra_properties, token_user
from labcloud.execution.executors.slurm.settings import SlurmSettings

LEASE_S = 3
API = "v0.0.38"


# ---------------------------------------------------------------------------------------------- the client


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (0, "0:0"),
        (768, "3:0"),  # exit 3
        (256, "1:0"),
        (255 << 8, "255:0"),
        (9, "0:9"),  # SIGKILL
        (15, "0:15"),
        (0x80 | 11, "0:11"),  # SIGSEGV with a core dump
        (36608, "143:0"),  # what scancel of a running shell script left here (scontrol: 143:0)
        (0x137F, "0:0"),  # stopped
        (0xFFFFFFFE, ""),  # NO_VAL: no status
        (None, ""),
        ("768", ""),
        (-1, ""),
    ],
)
def test_slurmrestd_s_exit_code_is_a_wait_status(raw: Any, expected: str) -> None:
    assert exit_code(raw) == expected


Handler = Callable[[httpx.Request], httpx.Response]


def fake_rest(
    handler: Handler, tmp_path: Path, token: str = "t.e.st", **settings: Any
) -> tuple[SlurmRest, Path]:
    token_file = tmp_path / "jwt"
    token_file.write_text(token)
    options: dict[str, Any] = {
        "rest_url": "http://slurmrestd:6820/",
        "rest_user": "alice",
        "rest_token_file": token_file,
        **settings,
    }
    return SlurmRest(SlurmSettings(**options), transport=httpx.MockTransport(handler)), token_file


def answer(status: int = 200, **body: Any) -> httpx.Response:
    return httpx.Response(status, json={"meta": {}, "errors": [], **body})


BATCH = BatchJob(
    name="labcloud-x",
    script="#!/bin/sh\ntrue\n",
    cpus=2,
    memory_mb=356,
    gpus=0,
    minutes=7,
    partition="",
    environment={"PATH": "/bin", "LABCLOUD_JOB_TOKEN": "secret"},
)


def test_a_submission_carries_the_batch_job_and_the_rotating_token(tmp_path: Path) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return answer(job_id=42, step_id="BATCH")

    rest, token_file = fake_rest(handler, tmp_path, extra_args=["--account=lab", "--requeue"])
    assert rest.submit(BATCH) == "42"
    token_file.write_text("SLURM_JWT=rotated\n")
    assert rest.submit(BatchJob(**{**BATCH.__dict__, "gpus": 2, "partition": "gpu", "memory_mb": 0})) == "42"

    first, second = seen
    assert (first.method, first.url.path) == ("POST", f"/slurm/{API}/job/submit")
    assert first.headers["X-SLURM-USER-NAME"] == "alice" and first.headers["X-SLURM-USER-TOKEN"] == "t.e.st"
    assert second.headers["X-SLURM-USER-TOKEN"] == "rotated"
    body = json.loads(first.content)
    assert body["script"] == BATCH.script
    assert body["job"] == {
        "name": "labcloud-x",
        "cpus_per_task": 2,
        "memory_per_node": 356,
        "time_limit": 7,
        "environment": {"PATH": "/bin", "LABCLOUD_JOB_TOKEN": "secret"},  # exactly these: a dictionary
        "current_working_directory": "/tmp",
        "standard_output": "/tmp/%x.out",
        "account": "lab",
        "requeue": True,
    }  # no partition: slurmrestd refuses an empty one
    job = json.loads(second.content)["job"]
    assert job["gres"] == "gpu:2" and job["partition"] == "gpu" and "memory_per_node" not in job


def test_slurm_s_refusal_and_trouble_on_the_way_are_told_apart(tmp_path: Path) -> None:
    replies = iter(
        [
            answer(
                500, errors=[{"error_code": 2014, "error": "Requested node configuration is not available"}]
            ),
            answer(
                500,
                errors=[
                    {"description": 'Unknown key "mem"', "source": "hsearch_r"},
                    {"error_code": 9001, "error": "Failure during parsing"},
                ],
            ),
            answer(500, errors=[{"error_code": 1800, "error": "Unable to contact slurm controller"}]),
            httpx.Response(401, text="Authentication failure"),
        ]
    )
    rest, _ = fake_rest(lambda request: next(replies), tmp_path)
    with pytest.raises(EngineRefused, match=r"^Requested node configuration is not available$"):
        rest.submit(BATCH)
    with pytest.raises(EngineRefused, match=r'^Unknown key "mem"; Failure during parsing$'):
        rest.submit(BATCH)
    with pytest.raises(RuntimeError, match="Unable to contact slurm controller"):
        rest.submit(BATCH)
    with pytest.raises(RuntimeError, match="HTTP 401"):
        rest.submit(BATCH)

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    down, _ = fake_rest(unreachable, tmp_path)
    for call in (down.queue, lambda: down.ended("1"), lambda: down.submit(BATCH)):
        with pytest.raises(RuntimeError, match="connection refused"):
            call()
    down.cancel("1")  # best effort: only logged


def test_the_queue_is_this_user_s_unfinished_jobs_and_ended_reads_one_job(tmp_path: Path) -> None:
    jobs = [
        {"job_id": 1, "job_state": "PENDING", "state_reason": "Resources", "user_name": "alice"},
        {"job_id": 2, "job_state": "RUNNING", "state_reason": "None", "user_name": "alice"},
        {"job_id": 3, "job_state": "COMPLETED", "state_reason": "None", "user_name": "alice"},
        {"job_id": 4, "job_state": "PENDING", "state_reason": "Priority", "user_name": "bob"},
        {"job_id": 5, "job_state": "COMPLETING", "state_reason": "None", "user_name": "alice"},
        {"job_id": 6, "job_state": "FAILED", "state_reason": "NonZeroExitCode", "user_name": "alice"},
    ]
    unknown = {"error_number": 2017, "error": "Invalid job id specified", "source": "slurm_load_job"}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == f"/slurm/{API}/jobs":
            return answer(jobs=jobs)
        slurm_id = int(request.url.path.rsplit("/", 1)[1])
        if slurm_id == 99:
            return answer(500, errors=[unknown], jobs=[])
        if slurm_id == 98:
            return answer(500, errors=[{"error_number": -1, "error": "Unspecified error"}], jobs=[])
        return answer(jobs=[{**jobs[slurm_id - 1], "exit_code": 768}])

    rest, _ = fake_rest(handler, tmp_path)
    assert rest.queue() == {
        "1": ("PENDING", "Resources"),
        "2": ("RUNNING", "None"),
        "5": ("COMPLETING", "None"),
    }
    assert rest.ended("6") == Ended("FAILED", "3:0")
    assert rest.ended("99") is None  # slurmctld forgot it
    with pytest.raises(RuntimeError, match="Unspecified error"):
        rest.ended("98")  # slurmctld out of reach: not a vanished job


def test_the_user_defaults_to_the_token_s_and_a_token_is_required(tmp_path: Path) -> None:
    token = "eyJhbGciOiJIUzI1NiJ9.eyJleHAiOjEsImlhdCI6MSwic3VuIjoiY2Fyb2wifQ.c2ln"  # {"sun": "carol", ...}
    assert token_user(token) == "carol" and token_user("garbage") == ""
    users = []

    def handler(request: httpx.Request) -> httpx.Response:
        users.append(request.headers["X-SLURM-USER-NAME"])
        return answer(jobs=[])

    rest, _ = fake_rest(handler, tmp_path, token=token, rest_user="")
    assert rest.queue() == {} and users == ["carol"]
    with pytest.raises(ValueError, match="slurm_rest_url needs slurm_rest_token"):
        SlurmSettings(rest_url="http://slurmrestd:6820")
    with pytest.raises(ValueError, match="-A"):
        extra_properties(["-A", "lab"])
