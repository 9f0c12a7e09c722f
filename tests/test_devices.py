"""Instruments as workers, end to end against a real ``labcloud serve`` (pull executor, 3 s leases): the
device SDK (:class:`labcloud.worker.Device`) in this process, and the simulator (``labcloud devices
simulate``, :mod:`labcloud.worker.simulator`) in this process and as the command.

One server serves the module; each test registers its own devices and leaves no job behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from jobs_helpers import write_app
from labcloud.worker import Device, DeviceError, DeviceJob
from labcloud.worker.simulator import SimSettings, SimulationThread, device_names, register
from live_server import LABCLOUD
from worker_helpers import Cluster, TcpProxy, eventually, suite_pull_server

LEASE_S = 3
RECORD = "rig-record"
SMALL = {"cpus": 1, "memory_mb": 64, "timeout_s": 120}
CAPACITY = {"cpus": 2, "memory_mb": 1024}


def _apps(apps_dir: Path) -> None:
    # What a device is asked to do: it does it itself (the command is never run).
    write_app(
        apps_dir,
        RECORD,
        ["false"],
        parameters={
            "type": "object",
            "properties": {
                "duration_s": {"type": "number", "default": 2, "minimum": 0},
                "prefix": {"type": "string", "default": ""},
                "subject": {"type": "string", "default": ""},
            },
        },
        inputs={"protocol": {"type": "file", "required": False}},
        resources=SMALL,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Cluster]:
    with suite_pull_server(tmp_path_factory.mktemp("devices-home"), database_url, _apps, LEASE_S) as c:
        yield c


@pytest.fixture
def cl(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    cluster.reset()


def device(cl: Cluster, name: str, server: str | None = None) -> Device:
    return Device(server or cl.url, cl.add_worker(name), capacity=CAPACITY, labels={"room": "B2"})


def take(dev: Device, timeout: float = 20) -> DeviceJob:
    job = dev.take(timeout=timeout)
    assert job is not None, "no job came"
    return job


def outputs(cl: Cluster, job_id: str) -> dict[str, bytes]:
    listed = cl.api("GET", f"/jobs/{job_id}/outputs")
    return {o["path"]: cl.http.get(f"/api/v1/jobs/{job_id}/outputs/{o['path']}").content for o in listed}


# ---------------------------------------------------------------------------------------------- the SDK


def test_a_device_takes_a_job_reports_and_succeeds(cl: Cluster, tmp_path: Path) -> None:
    protocol = b"step 1: habituate\nstep 2: record\n" * 1000
    cl.api("PUT", "/files/protocols/open-field.txt", expect=201, content=protocol)
    clip = tmp_path / "clip.bin"
    clip.write_bytes(os.urandom(300_000))
    job = cl.submit(
        RECORD, {"duration_s": 1, "subject": "mouse-7"}, inputs={"protocol": "protocols/open-field.txt"}
    )

    with device(cl, "rig-a") as dev:
        dev.status = {"camera": "ready", "temperature_c": 24.5}
        taken = take(dev)
        assert (taken.id, taken.attempt, taken.app) == (job["id"], 1, RECORD)
        assert taken.params == {"duration_s": 1, "prefix": "", "subject": "mouse-7"}
        assert cl.job(job["id"])["state"] == "staging"
        fetched = taken.download("protocol", tmp_path / "inputs")
        assert fetched == tmp_path / "inputs" / "open-field.txt" and fetched.read_bytes() == protocol

        dev.status = {"camera": "recording", "temperature_c": 24.75}
        taken.log("recording mouse-7")
        taken.progress(0.5)
        eventually(lambda: cl.job(job["id"])["progress"] == 0.5, 10, "the progress to arrive")
        assert cl.job(job["id"])["state"] == "running"
        eventually(lambda: "recording mouse-7" in cl.log(job["id"]), 10, "the log line to arrive")
        assert cl.worker_info("rig-a")["running_jobs"] == [job["id"]]

        stored = taken.upload(clip, as_="video/clip.bin")
        assert stored is not None and stored["sha256"] == hashlib.sha256(clip.read_bytes()).hexdigest()
        taken.output("counts.csv").write_text("frame,x,y\n1,0.5,0.25\n")
        taken.log("done")
        assert taken.succeed("recorded 1 s") == "succeeded"
        assert not taken.reporting and dev.jobs == []

        # the status came with the heartbeats, beside the machine's telemetry
        def latest_status() -> dict[str, Any] | None:
            t = cl.worker_info("rig-a")["telemetry"]
            return t if t.get("status") == {"camera": "recording", "temperature_c": 24.75} else None

        dev.beat()
        telemetry = eventually(latest_status, 10, "the status in the worker's telemetry")
        assert telemetry["disk_free_bytes"] > 0 and "load1" in telemetry and "sandbox" not in telemetry

    done = cl.job(job["id"])
    assert done["state"] == "succeeded" and done["progress"] == 1.0 and done["exit_code"] == 0
    assert done["worker"] == "rig-a" and done["usage"]["wall_s"] > 0
    assert outputs(cl, job["id"]) == {
        "video/clip.bin": clip.read_bytes(),
        "counts.csv": b"frame,x,y\n1,0.5,0.25\n",
    }
    log = cl.log(job["id"])
    assert log.index("recording mouse-7") < log.index("done"), log
    info = cl.worker_info("rig-a")
    assert info["running_jobs"] == [] and info["labels"] == {}  # labels are the admin's, not the device's


def test_a_device_from_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in (
        "LABCLOUD_WORKER_SERVER",
        "LABCLOUD_SERVER",
        "LABCLOUD_WORKER_TOKEN",
        "LABCLOUD_WORKER_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(DeviceError, match="LABCLOUD_WORKER_SERVER"):
        Device.from_env()
    monkeypatch.setenv("LABCLOUD_SERVER", "http://127.0.0.1:9")
    with pytest.raises(DeviceError, match="no worker token"):
        Device.from_env()
    token_file = tmp_path / "token"
    token_file.write_text("lcw_from-the-file\n")
    monkeypatch.setenv("LABCLOUD_WORKER_TOKEN_FILE", str(token_file))
    dev = Device.from_env(capacity=CAPACITY, connect_tries=1)
    assert (dev.api.server, dev.token) == ("http://127.0.0.1:9", "lcw_from-the-file")
    assert dev.capacity == {"cpus": 2.0, "memory_mb": 1024.0, "gpus": 0.0}
    with pytest.raises(ValueError, match="JSON"):
        dev.status = {"frame": object()}
    with pytest.raises(
        DeviceError, match=re.escape("cannot reach the labcloud server at http://127.0.0.1:9")
    ):
        dev.connect()  # nothing listens there
    assert not dev.work_dir.exists()  # its temporary folder went with it


def test_a_cancel_reaches_the_device(cl: Cluster) -> None:
    job = cl.submit(RECORD, {"duration_s": 600})
    with device(cl, "rig-cancel") as dev:
        taken = take(dev)
        assert taken.start() == "running"
        taken.log("recording until cancelled")
        assert not taken.wait_cancelled(0.2) and not taken.cancelled
        cl.api("POST", f"/jobs/{job['id']}/cancel")
        assert taken.wait_cancelled(10), "the cancel did not come with a heartbeat"
        assert taken.cancelled and not taken.gone
        taken.log("camera stopped")
        assert taken.cancel("stopped by the cancel") == "cancelled"
    done = cl.job(job["id"])
    assert done["state"] == "cancelled"
    assert "camera stopped" in cl.log(job["id"])


def test_a_device_that_lost_its_job_reports_nothing_more(cl: Cluster, tmp_path: Path) -> None:
    """Cut off from the server past its lease, a device finds its job given to another device: the
    heartbeat that comes through aborts the old attempt, whose reports are then dropped, not sent."""
    proxy = TcpProxy(int(cl.url.rsplit(":", 1)[1]))
    late = tmp_path / "late.txt"
    late.write_text("from the first attempt\n")
    job = cl.submit(RECORD, {"duration_s": 600})
    try:
        with device(cl, "rig-far", server=proxy.url) as far, device(cl, "rig-near") as near:
            first = take(far)
            first.start()
            first.log("first attempt")
            eventually(lambda: "first attempt" in cl.log(job["id"]), 10, "the first attempt's log")
            proxy.cut()
            second = take(near, timeout=30)  # once the lease ran out and the job was queued again
            assert (second.id, second.attempt) == (job["id"], 2)
            assert not first.gone  # it cannot know yet
            proxy.restore()
            eventually(lambda: first.gone, 15, "the far device's heartbeat to abort the old attempt")
            assert first.wait_cancelled(0) and far.jobs == [] and not first.reporting
            first.log("late line")
            first.progress(0.9)
            assert first.upload(late) is None
            assert first.succeed() is None
            second.log("second attempt")
            assert second.succeed() == "succeeded"
    finally:
        proxy.close()
    done = cl.job(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert [(a["ran_on"], a["state"]) for a in done["attempt_history"]] == [
        ("worker rig-far", "failed"),
        ("worker rig-near", "succeeded"),
    ]
    log = cl.log(job["id"])
    assert "first attempt" in log and "second attempt" in log and "late line" not in log, log
    assert cl.api("GET", f"/jobs/{job['id']}/outputs") == []


def test_a_revoked_device_gives_up_its_job(cl: Cluster) -> None:
    job = cl.submit(RECORD, {"duration_s": 600})
    with device(cl, "rig-revoked") as dev:
        taken = take(dev)
        taken.start()
        cl.api("POST", f"/workers/{cl.worker_info('rig-revoked')['id']}/revoke")
        eventually(lambda: dev.revoked, 10, "the device to learn its token was revoked")
        assert taken.gone and dev.jobs == []
        assert taken.succeed() is None
        with pytest.raises(DeviceError, match="revoked"):
            dev.take(timeout=1)
    requeued = cl.job(job["id"])  # its attempt was lost with the token: queued again
    assert requeued["state"] == "queued" and requeued["attempts"] == 1


def test_a_device_closed_with_a_job_gives_it_back(cl: Cluster) -> None:
    job = cl.submit(RECORD, {"duration_s": 600})
    with device(cl, "rig-closing") as dev:
        taken = take(dev)
        taken.start()
    assert taken.gone and not taken.reporting
    requeued = cl.job(job["id"])  # at once, not when the lease runs out
    assert requeued["state"] == "queued" and requeued["attempts"] == 1
    lost = [e for e in cl.events(job["id"]) if e["reason"] == "worker_lost"]
    assert [e["message"] for e in lost] == ["the device closed without ending it"]


# ---------------------------------------------------------------------------------------------- the simulator


def fleet(cl: Cluster, prefix: str, count: int, tmp_path: Path) -> dict[str, str]:
    return register(cl.url, cl.admin_token, device_names(prefix, count), {"kind": "sim"}, tmp_path / "tokens")


def sim_settings() -> SimSettings:
    return SimSettings(stagger_s=0.5, step_s=0.25, seed=7)


def test_simulated_devices_record_the_queued_jobs(cl: Cluster, tmp_path: Path) -> None:
    tokens = fleet(cl, "sim-q", 5, tmp_path)
    assert list(tokens) == [f"sim-q-{i}" for i in range(1, 6)]
    assert (tmp_path / "tokens").stat().st_mode & 0o777 == 0o600
    assert json.loads((tmp_path / "tokens").read_text()) == tokens
    assert cl.worker_info("sim-q-3")["labels"] == {"kind": "sim"}
    jobs = [cl.submit(RECORD, {"duration_s": 1, "prefix": f"take-{i}"}) for i in range(5)]
    with SimulationThread(cl.url, tokens, sim_settings()) as sim:
        done = [cl.wait_end(job["id"], timeout=60) for job in jobs]
        status = cl.worker_info("sim-q-1")["telemetry"]["status"]
        stats = sim.stats()
    assert [j["state"] for j in done] == ["succeeded"] * 5, done
    for i, job in enumerate(done):
        [ran_on] = cl.ran_on(job["id"])
        assert ran_on in tokens
        text = outputs(cl, job["id"])[f"take-{i}.txt"].decode()
        assert f"device: {ran_on}\njob: {job['id']}\n" in text and "frames: 30" in text
        log = cl.log(job["id"])
        assert f"{ran_on}: recording 1 s" in log and f"{ran_on}: wrote take-{i}.txt" in log, log
        assert job["progress"] == 1.0
    assert status["camera"] in ("idle", "recording") and 22 < status["temperature_c"] < 26
    assert stats["succeeded"] == 5 and stats["taken"] == 5 and stats["heartbeats"] >= 5
    # run again: the tokens file has them all, nothing is registered
    assert register(cl.url, None, device_names("sim-q", 5), tokens_file=tmp_path / "tokens") == tokens


def test_a_killed_simulated_device_s_job_runs_again_elsewhere(cl: Cluster, tmp_path: Path) -> None:
    tokens = fleet(cl, "sim-k", 2, tmp_path)
    job = cl.submit(RECORD, {"duration_s": 4})
    with SimulationThread(cl.url, tokens, sim_settings()) as sim:
        holder = eventually(lambda: sim.holding().get(job["id"]), 20, "a device to take the job")
        eventually(lambda: f"{holder}: recording" in cl.log(job["id"]), 10, "the recording to start")
        killed_at = cl.worker_info(holder)["last_heartbeat_at"]
        sim.kill(holder)  # no goodbye: the lease (3 s) runs out, the job is queued again
        done = cl.wait_end(job["id"], timeout=60)
        [other] = set(tokens) - {holder}
        assert done["state"] == "succeeded" and done["attempts"] == 2, (done, cl.log(job["id"]))
        assert [(a["ran_on"], a["state"]) for a in done["attempt_history"]] == [
            (f"worker {holder}", "failed"),
            (f"worker {other}", "succeeded"),
        ]
        lost = [e for e in cl.events(job["id"]) if e["reason"] == "worker_lost"]
        assert lost and "lease expired" in lost[0]["message"]
        assert set(outputs(cl, job["id"])) == {f"{other}.txt"}
        assert (
            cl.worker_info(holder)["state"] == "lost"
            or cl.worker_info(holder)["last_heartbeat_at"] == killed_at
        )

        sim.revive(holder)  # it comes back, empty-handed, and heartbeats again
        eventually(
            lambda: cl.worker_info(holder)["last_heartbeat_at"] != killed_at,
            10,
            "the revived device's heartbeat",
        )
        assert cl.worker_info(holder)["state"] == "active"


def test_a_simulated_device_back_after_its_lease_is_fenced(cl: Cluster, tmp_path: Path) -> None:
    tokens = fleet(cl, "sim-p", 2, tmp_path)
    job = cl.submit(RECORD, {"duration_s": 3})
    with SimulationThread(cl.url, tokens, sim_settings()) as sim:
        holder = eventually(lambda: sim.holding().get(job["id"]), 20, "a device to take the job")
        eventually(lambda: f"{holder}: recording" in cl.log(job["id"]), 10, "the recording to start")
        sim.pause(holder)  # frozen with the job: no heartbeat, no report
        [other] = set(tokens) - {holder}
        eventually(lambda: sim.holding().get(job["id"]) == other or None, 30, "the other device to take it")
        sim.resume(holder)  # its first heartbeat (or report) learns the attempt is over
        eventually(lambda: sim.stats()["aborted"] >= 1, 10, "the old attempt to be dropped")
        done = cl.wait_end(job["id"], timeout=30)
    assert done["state"] == "succeeded" and done["attempts"] == 2
    assert set(outputs(cl, job["id"])) == {f"{other}.txt"}
    assert f"{holder}: wrote" not in cl.log(job["id"])


def test_the_simulate_command(cl: Cluster, tmp_path: Path) -> None:
    stats_file = tmp_path / "stats.json"
    command = [
        *LABCLOUD,
        "devices",
        "simulate",
        "3",
        "--server",
        cl.url,
        "--prefix",
        "cli-sim",
        "--label",
        "room=sim",
        "--tokens-file",
        str(tmp_path / "tokens.json"),
        "--duration-s",
        "0.5",
        "--stagger-s",
        "0.3",
        "--stats-file",
        str(stats_file),
    ]
    env = cl.cli_env()  # the admin token in LABCLOUD_TOKEN
    with open(tmp_path / "sim.log", "wb") as out:
        proc = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        jobs = [cl.submit(RECORD, {"duration_s": 0.5}) for _ in range(3)]
        done = [cl.wait_end(job["id"], timeout=60) for job in jobs]
        assert [j["state"] for j in done] == ["succeeded"] * 3, (tmp_path / "sim.log").read_text()
        assert {cl.ran_on(j["id"])[0] for j in done} <= {"cli-sim-1", "cli-sim-2", "cli-sim-3"}
        assert cl.worker_info("cli-sim-2")["labels"] == {"room": "sim"}
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (tmp_path / "sim.log").read_text()
    stats = json.loads(stats_file.read_text())
    assert stats["succeeded"] == 3 and stats["connected"] == 3 and stats["heartbeats"] >= 3
    assert len(stats["heartbeat_latency_s"]) == stats["heartbeats"]
    assert "3/3 devices connected" in (tmp_path / "sim.log").read_text()


# ---------------------------------------------------------------------------------------------- sessions


def test_a_session_over_twenty_simulated_devices_survives_one_lost_mid_session(
    cl: Cluster, tmp_path: Path
) -> None:
    """One submission, one recording on each of 20 devices with its own prefix; one device dies mid-session:
    only its part fails, the other 19 are recorded, and the device, back again, is not handed its old part."""
    tokens = fleet(cl, "sess", 20, tmp_path)
    devices = [{"worker": name, "params": {"prefix": f"m12-{name}"}} for name in tokens]
    started = cl.api(
        "POST",
        "/sessions",
        json={"app": RECORD, "name": "mouse 12", "params": {"duration_s": 3}, "devices": devices},
    )
    assert [d["worker"] for d in started["devices"]] == sorted(tokens)
    victim = "sess-7"
    part = next(d for d in started["devices"] if d["worker"] == victim)
    with SimulationThread(cl.url, tokens, sim_settings()) as sim:
        eventually(lambda: sim.holding().get(part["job_id"]) == victim, 30, "sess-7 to take its part")
        eventually(lambda: f"{victim}: recording" in cl.log(part["job_id"]), 10, "its recording to start")
        sim.kill(victim)  # gone without a word: its lease (3 s) runs out

        def ended() -> dict[str, Any] | None:
            found: dict[str, Any] = cl.api("GET", f"/sessions/{started['id']}")
            return found if found["state"] in ("succeeded", "partial", "failed") else None

        done = eventually(ended, 90, "every part of the session to end")
        sim.revive(victim)
        beats = cl.worker_info(victim)["last_heartbeat_at"]
        eventually(lambda: cl.worker_info(victim)["last_heartbeat_at"] != beats, 20, "sess-7 to be back")
        assert sim.holding() == {}  # back again, nothing handed to it
    assert done["state"] == "partial" and done["counts"] == {"succeeded": 19, "failed": 1}, done
    by_worker = {d["worker"]: d for d in done["devices"]}
    assert (by_worker[victim]["state"], by_worker[victim]["reason"]) == ("failed", "worker_lost")
    for name, p in by_worker.items():
        if name != victim:
            assert f"m12-{name}.txt" in outputs(cl, str(p["job_id"])), name
            [ran_on] = cl.ran_on(str(p["job_id"]))
            assert ran_on == name  # each part on its own device
    lost = cl.job(part["job_id"])
    assert lost["attempts"] == 1 and lost["state"] == "failed"
