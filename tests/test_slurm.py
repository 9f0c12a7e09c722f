"""The Slurm executor end to end: a real ``labcloud serve`` (a route sends the test apps to the slurm
executor; 3 s leases, the queue read every 0.5 s) submitting to a real single-node Slurm (tests/slurm.py),
whose batch jobs run ``labcloud run-job``. Every test runs twice: with Slurm's commands, and through
slurmrestd with a JWT only.

Jobs that succeed, fail, time out, wait for resources, are cancelled through labcloud (pending and
running), are killed by ``scancel`` behind labcloud's back, and are refused by sbatch.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from conftest import kill_processes_under
from engine_helpers import engine_apps
from labcloud.execution import engine_options
from labcloud.execution.executors.slurm.batch import Ended
from labcloud.execution.executors.slurm.executor import explain
from labcloud.services.job_states import FailureReason
from labcloud.settings import ContainerSettings
from slurm import SlurmCluster
from test_container_workers import run_small_task
from test_containers import use_engine, write_container_app
from testing.engines import IMAGE, EngineCLI
from worker_helpers import Cluster, eventually, pull_server

pytestmark = [pytest.mark.slurm, pytest.mark.db_agnostic]

LEASE_S = 3


@contextlib.contextmanager
def slurm_pull_server(
    home: Path, apps: Callable[[Path], None], process_env: dict[str, str], **settings: str
) -> Iterator[Cluster]:
    """``labcloud serve`` whose test apps (``e-*``) and GA4GH TES tasks (app ``tes``) routes send to Slurm:
    the queue read every 0.5 s."""
    try:
        with pull_server(
            home,
            None,
            apps,
            lease_seconds=LEASE_S,
            process_env=process_env,
            executor="local",  # the jobs reach Slurm by a route, as most installations would send them
            executor_routes='[{"app": "e-*", "executor": "slurm"}, {"app": "tes", "executor": "slurm"}]',
            slurm_poll_s="0.5",
            kill_grace_s="1",
            runner_work_dir=str(home / "runs"),
            # Run by root, the runners drop their jobs to nobody; with the sandbox off those could not
            # reach their folders below this test's (root's own) tmp_path.
            **{"sandbox": "auto", **settings},
        ) as cluster:
            yield cluster
    finally:
        kill_processes_under(home)


@pytest.fixture(scope="module", params=["commands", "slurmrestd"])
def slurm_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, slurm_cluster: SlurmCluster
) -> Iterator[Cluster]:
    """The server, reaching Slurm through its commands (SLURM_CONF) or only through slurmrestd (a JWT in a
    file, re-read on each call; no SLURM_CONF)."""
    home = tmp_path_factory.mktemp(f"slurm-{request.param}-home")
    if request.param == "commands":
        process_env, how = {"SLURM_CONF": str(slurm_cluster.conf)}, {}
    else:
        token_file = home / "slurm.jwt"
        token_file.write_text(f"SLURM_JWT={slurm_cluster.token(lifespan=3600)}\n")  # as scontrol prints it
        token_file.chmod(0o600)
        process_env = {}
        how = {"slurm_rest_url": slurm_cluster.rest_url, "slurm_rest_token_file": str(token_file)}
    with slurm_pull_server(home, engine_apps, process_env, **how) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def slurm_podman_server(
    tmp_path_factory: pytest.TempPathFactory, slurm_cluster: SlurmCluster, podman_cli: EngineCLI
) -> Iterator[Cluster]:
    """A server whose container settings name the test setup's Podman: the batch scripts of its container
    jobs pass them to their runners."""
    home = tmp_path_factory.mktemp("slurm-podman-home")
    containers = ContainerSettings()
    use_engine(containers, podman_cli)  # type: ignore[arg-type]

    def apps(apps_dir: Path) -> None:
        write_container_app(apps_dir, "e-box", ["sh", "-c", "echo hello from $LABCLOUD_JOB_ID > {output}/hi"])

    with slurm_pull_server(
        home, apps, {"SLURM_CONF": str(slurm_cluster.conf), **engine_options.environment(containers)}
    ) as cluster:
        yield cluster


@pytest.fixture
def sc(slurm_server: Cluster, slurm: SlurmCluster) -> Iterator[Cluster]:
    yield slurm_server
    with contextlib.suppress(AssertionError):
        slurm_server.cancel_everything()


def slurm_job(cluster: SlurmCluster, job_id: str) -> dict[str, str]:
    """What Slurm knows of a labcloud job (found by its Slurm job name), from scontrol."""
    listing = cluster.run("squeue", "-h", "-n", f"labcloud-{job_id}", "-o", "%i").stdout.split()
    ids = listing or [row["JobID"] for row in _completed(cluster, job_id)]
    assert ids, f"Slurm has no job labcloud-{job_id}"
    shown = cluster.run("scontrol", "show", "job", "-o", ids[-1]).stdout
    fields = dict(part.split("=", 1) for part in shown.split() if "=" in part)
    return {"id": ids[-1], **fields}


def _completed(cluster: SlurmCluster, job_id: str) -> list[dict[str, str]]:
    """The labcloud job's ended Slurm jobs, from the job completion log (this cluster keeps no
    accounting, and ``sacct -c`` does not filter by name: we do)."""
    rows = cluster.run("sacct", "-c", "-n", "-P", "-o", "JobID,JobName,Partition").stdout.splitlines()
    found = [dict(zip(("JobID", "JobName", "Partition"), row.split("|"), strict=False)) for row in rows]
    return [row for row in found if row.get("JobName") == f"labcloud-{job_id}"]


def slurm_partitions(cluster: SlurmCluster, job_id: str) -> list[str]:
    """The partition of each ended Slurm job of a labcloud job."""

    def found() -> list[str] | None:
        return [row["Partition"] for row in _completed(cluster, job_id)] or None

    partitions: list[str] = eventually(found, 20, "Slurm's record of the ended job")
    return partitions


def wait_state(c: Cluster, job_id: str, state: str, timeout: float = 60) -> dict[str, Any]:
    return c.wait_job(job_id, lambda j: j["state"] == state, timeout, f"job {job_id} to be {state}")


# ---------------------------------------------------------------------------------------------- tests


def test_jobs_run_as_slurm_batch_jobs_with_their_resources(sc: Cluster, slurm: SlurmCluster) -> None:
    data = os.urandom(2**20 + 5)
    sc.api("PUT", "/files/in/data.bin", expect=201, content=data)
    ok = sc.submit("e-echo", inputs={"data": "in/data.bin"}, resources={"cpus": 2, "memory_mb": 100})
    failing = sc.submit("e-fail")
    gpu = sc.submit("e-gpu")
    done = sc.wait_end(ok["id"])
    assert done["state"] == "succeeded", (done, sc.log(ok["id"]))
    assert done["executor"] == "slurm" and done["attempts"] == 1 and done["progress"] == 1.0
    assert f"hello from {ok['id']}" in sc.log(ok["id"])
    digest = sc.http.get(f"/api/v1/jobs/{ok['id']}/outputs/data.sha256").text.strip()
    assert digest == hashlib.sha256(data).hexdigest()
    # Slurm ran it with the job's resources, under its name, and the runner ended cleanly
    seen = eventually(
        lambda: (found := slurm_job(slurm, ok["id"]))["JobState"] not in ("RUNNING", "COMPLETING") and found,
        20,
        "Slurm's end",
    )
    assert seen["JobState"] == "COMPLETED" and seen["ExitCode"] == "0:0"
    assert seen["Partition"] == "debug" and seen["NumCPUs"] == "2" and "mem=356M" in seen["TRES"]

    failed = sc.wait_end(failing["id"])
    assert (failed["state"], failed["reason"], failed["exit_code"]) == ("failed", "app_error", 3)
    on_gpu = sc.wait_end(gpu["id"])
    assert on_gpu["state"] == "succeeded" and on_gpu["queue"] == "gpu"
    assert slurm_partitions(slurm, gpu["id"]) == ["gpu"]


def test_a_pending_job_shows_slurm_s_reason_and_cancels_at_once(sc: Cluster, slurm: SlurmCluster) -> None:
    whole_node = {"cpus": slurm.cpus, "memory_mb": 64}
    first = sc.submit("e-sleep", {"seconds": 60}, resources=whole_node)
    wait_state(sc, first["id"], "running")
    second = sc.submit("e-sleep", {"seconds": 60}, resources=whole_node)
    waiting = sc.wait_job(
        second["id"], lambda j: j["message"].startswith("waiting: "), 30, "Slurm's pending reason"
    )
    assert waiting["state"] == "queued"
    assert waiting["message"].startswith("waiting: Resources (Slurm job "), waiting
    slurm_id = slurm_job(slurm, second["id"])["id"]

    sc.api("POST", f"/jobs/{second['id']}/cancel")
    assert sc.job(second["id"])["state"] == "cancelled"  # no runner held it: at once, and out of Slurm
    eventually(
        lambda: slurm_id not in slurm.run("squeue", "-h", "-o", "%i").stdout.split(), 10, "the scancel"
    )
    sc.api("POST", f"/jobs/{first['id']}/cancel")  # running: the runner's next heartbeat stops it
    done = sc.wait_end(first["id"], timeout=30)
    assert done["state"] == "cancelled", (done, sc.log(first["id"]))
    assert "cancel requested" in sc.log(first["id"])
    ended = eventually(
        lambda: slurm_job(slurm, first["id"]).get("JobState") not in ("RUNNING", "COMPLETING") or None,
        20,
        "end",
    )
    assert ended


def test_the_job_s_timeout_ends_it(sc: Cluster) -> None:
    job = sc.submit("e-sleep", {"seconds": 60}, resources={"timeout_s": 1})
    done = sc.wait_end(job["id"], timeout=60)
    assert (done["state"], done["reason"]) == ("failed", "timeout"), (done, sc.log(job["id"]))


@pytest.mark.parametrize("slurm_server", ["commands"], indirect=True)  # ~20 s: Slurm checks limits slowly
def test_slurm_s_own_time_limit_ends_it_as_a_timeout(sc: Cluster, slurm: SlurmCluster) -> None:
    """The runner enforces the job's timeout; Slurm's limit (timeout + staging slack) is the backstop when
    the runner itself hangs. Here the limit is cut to nothing under the running job."""
    job = sc.submit("e-sleep", {"seconds": 120})
    wait_state(sc, job["id"], "running")
    slurm.run("scontrol", "update", f"JobId={slurm_job(slurm, job['id'])['id']}", "TimeLimit=0")
    done = sc.wait_end(job["id"], timeout=90)
    assert (done["state"], done["reason"]) == ("failed", "timeout"), done
    assert "reached its Slurm time limit" in done["message"], done
    assert slurm_job(slurm, job["id"])["JobState"] == "TIMEOUT"


def test_scancel_behind_labcloud_s_back_fails_the_job_with_that_reason(
    sc: Cluster, slurm: SlurmCluster
) -> None:
    job = sc.submit("e-sleep", {"seconds": 60})
    wait_state(sc, job["id"], "running")
    eventually(lambda: f"started {job['id']}" in sc.log(job["id"]), 10, "the job's first line")
    slurm.run("scancel", slurm_job(slurm, job["id"])["id"])
    done = sc.wait_end(job["id"], timeout=30)
    assert (done["state"], done["reason"]) == ("failed", "system_error"), done
    assert "cancelled in Slurm, not through labcloud" in done["message"], done
    assert done["attempts"] == 1  # an administrator's cancel is not retried


def test_a_job_sbatch_refuses_fails_with_slurm_s_words(sc: Cluster) -> None:
    job = sc.submit("e-sleep", {"seconds": 0}, resources={"memory_mb": 10**7})  # more than the node
    done = sc.wait_end(job["id"], timeout=30)
    assert (done["state"], done["reason"]) == ("failed", "rejected"), done
    assert done["message"].startswith("slurm refused the job: "), done
    assert "node configuration is not available" in done["message"], done  # Slurm's words, either way


def wait_sweep(sc: Cluster, sweep_id: str, timeout: float = 60) -> dict[str, Any]:
    def ended() -> dict[str, Any] | None:
        seen: dict[str, Any] = sc.api("GET", f"/sweeps/{sweep_id}")
        return seen if seen["done"] == 1.0 else None

    found: dict[str, Any] = eventually(ended, timeout, f"sweep {sweep_id} to end")
    return found


def slurm_ids_of_sweep(sc: Cluster, sweep_id: str) -> dict[str, str]:
    """Each job of a sweep → the Slurm job its (last) attempt ran as, from its attempt history."""
    jobs = sc.api("GET", f"/sweeps/{sweep_id}/jobs", params={"limit": 200})["items"]
    return {job["id"]: sc.job(job["id"])["attempt_history"][-1]["ran_on"] for job in jobs}


def test_a_sweep_runs_as_one_slurm_job_array(sc: Cluster, slurm: SlurmCluster) -> None:
    """One sbatch for the sweep: each job is a task of one array, runs with its own token and reports as
    itself; Slurm ran every task under the sweep's name."""
    sets = [{"seconds": n / 10} for n in range(5)]
    sweep = sc.api("POST", "/sweeps", json={"app": "e-sleep", "sets": sets})
    done = wait_sweep(sc, sweep["id"])
    assert done["counts"] == {"succeeded": 5}, done
    ran_as = slurm_ids_of_sweep(sc, sweep["id"])
    arrays = {where.removeprefix("Slurm job ").split("_")[0] for where in ran_as.values()}
    assert len(arrays) == 1, ran_as  # one array...
    tasks = sorted(int(where.split("_")[1]) for where in ran_as.values())
    assert tasks == [0, 1, 2, 3, 4], ran_as  # ...a task for each job
    for job_id in ran_as:
        assert f"started {job_id}" in sc.log(job_id) and "finished" in sc.log(job_id)
        assert sc.http.get(f"/api/v1/jobs/{job_id}/outputs/done.txt").text == "done\n"
    (array,) = arrays
    shown = slurm.run("scontrol", "show", "job", "-o", array).stdout
    assert f"JobName=labcloud-sweep-{sweep['id']}" in shown and "JobState=COMPLETED" in shown, shown


def test_a_pending_sweep_waits_as_array_tasks_and_cancels_out_of_slurm(
    sc: Cluster, slurm: SlurmCluster
) -> None:
    """Tasks Slurm holds pending (one whole-node job runs at a time) show Slurm's reason under their own
    ``<array>_<task>`` id; cancelling the sweep takes the pending tasks out of Slurm at once and stops the
    running one through its runner."""
    whole_node = {"cpus": slurm.cpus, "memory_mb": 64}
    sweep = sc.api(
        "POST", "/sweeps", json={"app": "e-sleep", "grid": {"seconds": [60, 61, 62]}, "resources": whole_node}
    )
    jobs = sc.api("GET", f"/sweeps/{sweep['id']}/jobs", params={"limit": 10})["items"]

    def two_waiting() -> list[dict[str, Any]] | None:
        seen = [sc.job(job["id"]) for job in jobs]
        waiting = [job for job in seen if job["message"].startswith("waiting: Resources (Slurm job ")]
        running = [job for job in seen if job["state"] == "running"]
        return seen if len(waiting) == 2 and len(running) == 1 else None

    seen = eventually(two_waiting, 60, "one task running and two waiting in Slurm")
    pending = [job["message"].split("Slurm job ")[1].rstrip(")") for job in seen if job["state"] == "queued"]
    assert all("_" in slurm_id for slurm_id in pending), pending
    assert len({slurm_id.split("_")[0] for slurm_id in pending}) == 1, pending  # tasks of one array
    listed = slurm.run("squeue", "-h", "-r", "-o", "%i").stdout.split()
    assert set(pending) <= set(listed), (pending, listed)

    sc.api("POST", f"/sweeps/{sweep['id']}/cancel")
    eventually(
        lambda: not set(pending) & set(slurm.run("squeue", "-h", "-r", "-o", "%i").stdout.split()),
        10,
        "the pending tasks' scancel",
    )
    done = wait_sweep(sc, sweep["id"], timeout=30)
    assert done["counts"] == {"cancelled": 3}, done


@pytest.mark.containers
def test_a_container_job_runs_as_a_slurm_batch_job(
    slurm_podman_server: Cluster, slurm: SlurmCluster, podman_cli: EngineCLI
) -> None:
    sc = slurm_podman_server
    job = sc.submit("e-box")
    done = sc.wait_end(job["id"], timeout=90)
    log = sc.log(job["id"])
    assert done["state"] == "succeeded", (done, log)
    assert done["executor"] == "slurm" and f"$ podman run {IMAGE}" in log, (done, log)
    assert sc.http.get(f"/api/v1/jobs/{job['id']}/outputs/hi").text == f"hello from {job['id']}\n"
    found = podman_cli.run("image", "inspect", "--format", "{{.Id}}", IMAGE).stdout.strip()
    assert done["image"] == f"sha256:{found.removeprefix('sha256:')}"
    ended = eventually(
        lambda: (seen := slurm_job(slurm, job["id"]))["JobState"] not in ("RUNNING", "COMPLETING") and seen,
        20,
        "Slurm's end",
    )
    assert ended["JobState"] == "COMPLETED", ended


@pytest.mark.containers
def test_a_tes_task_runs_as_a_slurm_batch_job(slurm_podman_server: Cluster) -> None:
    """Tasks go where the installation's jobs go (here: Slurm), their executors in Podman on the node."""
    done = run_small_task(slurm_podman_server, "slurm-task")
    assert slurm_podman_server.job(done["id"])["executor"] == "slurm"


@pytest.mark.parametrize(
    ("ended", "taken", "reason", "words"),
    [
        (Ended("TIMEOUT", "0:0"), True, FailureReason.TIMEOUT, "time limit"),
        (Ended("OUT_OF_MEMORY", "0:125"), True, FailureReason.OUT_OF_MEMORY, "out of memory"),
        (Ended("FAILED", "0:9"), True, FailureReason.OUT_OF_MEMORY, "out of memory"),
        (Ended("NODE_FAIL", "0:0"), True, FailureReason.WORKER_LOST, "NODE_FAIL"),
        (Ended("CANCELLED+", "0:15"), True, FailureReason.SYSTEM_ERROR, "not through labcloud"),
        (Ended("FAILED", "1:0"), False, FailureReason.STAGING_FAILED, "never reached the server"),
        (Ended("COMPLETED", "0:0"), True, FailureReason.WORKER_LOST, "without reporting"),
        (None, True, FailureReason.WORKER_LOST, "vanished"),
    ],
)
def test_how_slurm_ended_a_job_becomes_its_failure(
    ended: Ended | None, taken: bool, reason: FailureReason, words: str
) -> None:
    output = "slurmstepd: error: Exceeded job memory limit" if ended and ended.exit_code == "0:9" else ""
    got, message = explain(ended, "42", taken=taken, output=output)
    assert got == reason and words in message and "Slurm job 42" in message
