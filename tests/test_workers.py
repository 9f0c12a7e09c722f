"""Remote workers end to end: a real ``labcloud serve`` (pull executor, 3 s leases) and real
``labcloud worker`` processes on 127.0.0.1, on SQLite and on PostgreSQL.

One server serves the whole module (starting one is the slow part); each test registers its own workers
and leaves no job another test's workers could take.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from jobs_helpers import write_app
from labcloud.execution import engine_options
from labcloud.worker.api import (
    Abandoned,
    Backoff,
    Fenced,
    TokenRejected,
    Unreachable,
    WorkerApi,
    WorkerApiError,
)
from labcloud.worker.logship import LogShipper, ProgressSender
from worker_helpers import Cluster, TcpProxy, eventually, suite_pull_server

LEASE_S = 3
JOBS = int(os.environ.get("LABCLOUD_TEST_WORKER_JOBS", "300"))
SH = "sh"
SMALL = {"cpus": 1, "memory_mb": 64, "timeout_s": 120}


def _apps(apps_dir: Path) -> None:
    write_app(
        apps_dir,
        "w-quick",
        [SH, "-c", 'echo "$LABCLOUD_JOB_ID" >> "$LABCLOUD_PARAM_SINK"'],
        parameters={"type": "object", "properties": {"sink": {"type": "string"}}, "required": ["sink"]},
        resources=SMALL,
    )
    write_app(
        apps_dir,
        "w-sleep",
        [
            SH,
            "-c",
            'echo "started $LABCLOUD_JOB_ID"; echo "::progress 0.5"; '
            'if [ "$LABCLOUD_JOB_ATTEMPT" = 1 ] && [ -n "$LABCLOUD_PARAM_FIRST" ]; '
            'then sleep "$LABCLOUD_PARAM_FIRST"; else sleep "$LABCLOUD_PARAM_SECONDS"; fi; '
            'echo done > "$LABCLOUD_OUTPUT/done.txt"; '
            'if [ -n "$LABCLOUD_PARAM_SINK" ]; then echo "$LABCLOUD_JOB_ID" >> "$LABCLOUD_PARAM_SINK"; fi; '
            "echo finished",
        ],
        parameters={
            "type": "object",
            "properties": {
                "seconds": {"type": "number", "default": 1},
                "first": {"type": "string", "default": "", "description": "the first attempt's seconds"},
                "sink": {"type": "string", "default": ""},
            },
        },
        resources=SMALL,
    )
    write_app(
        apps_dir,
        "w-inputs",
        [
            SH,
            "-c",
            'sha256sum < "$LABCLOUD_INPUT_DATA" | cut -d" " -f1 > "$LABCLOUD_OUTPUT/data.sha256"; '
            'ls "$LABCLOUD_INPUT_FOLDER" | sort > "$LABCLOUD_OUTPUT/listing.txt"; '
            'mkdir -p "$LABCLOUD_OUTPUT/sub"; cp "$LABCLOUD_INPUT_FOLDER/a.txt" "$LABCLOUD_OUTPUT/sub/"; '
            'if cat "$LABCLOUD_PARAM_PROBE" > /dev/null 2>&1; then echo "probe readable"; '
            'else echo "probe hidden"; fi; echo "inputs checked"',
        ],
        parameters={"type": "object", "properties": {"probe": {"type": "string", "default": "/nonexistent"}}},
        inputs={"data": {"type": "file"}, "folder": {"type": "folder"}},
        resources=SMALL,
    )
    write_app(
        apps_dir,
        "w-ticks",
        [SH, "-c", 'i=1; while [ $i -le 30 ]; do echo "tick $i"; i=$((i+1)); sleep 0.1; done'],
        resources=SMALL,
    )
    write_app(
        apps_dir,
        "w-spinnaker",
        [SH, "-c", "echo on the board"],
        labels={"platform": "spinnaker"},
        resources=SMALL,
    )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, database_url: str) -> Iterator[Cluster]:
    with suite_pull_server(tmp_path_factory.mktemp("workers-home"), database_url, _apps, LEASE_S) as c:
        yield c


@pytest.fixture
def cl(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    cluster.reset()


def running(job: dict[str, Any]) -> bool:
    return job["state"] == "running"


def sink_lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


# ---------------------------------------------------------------------------------------------- tests


def test_a_job_runs_on_a_worker_with_inputs_outputs_log_and_sandbox(cl: Cluster, tmp_path: Path) -> None:
    data = os.urandom(3 * 2**20 + 17)  # several download chunks
    for path, body in (("in/data.bin", data), ("in/folder/a.txt", b"alpha\n"), ("in/folder/b.txt", b"b")):
        cl.api("PUT", f"/files/{path}", expect=201, content=body)
    token_file = tmp_path / "worker-token"
    token_file.write_text(cl.add_worker("alpha") + "\n")
    token_file.chmod(0o600)
    worker = cl.start_worker("alpha", "--token-file", str(token_file), "--sandbox", "required", token="")

    job = cl.submit(
        "w-inputs",
        {"probe": str(token_file)},
        inputs={"data": "in/data.bin", "folder": "in/folder"},
        name="on a worker",
    )
    done = cl.wait_end(job["id"], timeout=60)
    log = cl.log(job["id"])
    assert done["state"] == "succeeded", (done, log, worker.log())
    assert done["attempts"] == 1 and done["exit_code"] == 0 and done["progress"] == 1.0
    assert done["usage"]["wall_s"] > 0
    assert cl.ran_on(job["id"]) == ["alpha"]
    assert done["worker"] == "alpha"  # the API says where it ran, per attempt too
    history = cl.api("GET", f"/jobs/{job['id']}")["attempt_history"]
    assert [(a["attempt"], a["ran_on"], a["state"]) for a in history] == [(1, "worker alpha", "succeeded")]
    assert [e["to_state"] for e in cl.events(job["id"])] == [
        "queued",
        "staging",
        "running",
        "finishing",
        "succeeded",
    ]
    # the log came over the worker API: the command line, the job's own lines, and the sandbox held
    assert "inputs checked" in log and "probe hidden" in log, log
    outputs = {o["path"]: o for o in cl.api("GET", f"/jobs/{job['id']}/outputs")}
    assert set(outputs) == {"data.sha256", "listing.txt", "sub/a.txt"}
    digest = cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/data.sha256").text.strip()
    assert digest == hashlib.sha256(data).hexdigest()
    assert cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/listing.txt").text.split() == ["a.txt", "b.txt"]
    assert cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/sub/a.txt").content == b"alpha\n"
    # the same files are in the owner's space, and the worker cleaned up after itself
    assert cl.http.get(f"/api/v1/files/jobs/{job['id']}/sub/a.txt").content == b"alpha\n"
    eventually(lambda: not any((worker.work_dir / "jobs").iterdir()), 10, "the job folder to be removed")

    # the admin listing shows the worker, its capacity and telemetry; the CLI too
    info = cl.worker_info("alpha")
    assert info["state"] == "active" and info["running_jobs"] == []
    assert info["capacity"]["cpus"] == 1 and info["capacity"]["memory_mb"] == 1024
    assert info["telemetry"]["sandbox"] is True and info["telemetry"]["disk_free_bytes"] > 0
    assert "load1" in info["telemetry"] and info["version"]
    listed = json.loads(cl.cli("workers", "--json").stdout)
    assert "alpha" in [w["name"] for w in listed]
    table = cl.cli("workers").stdout
    assert "alpha" in table and "active" in table


def test_a_killed_worker_s_job_completes_on_another(cl: Cluster) -> None:
    first = cl.start_worker("kill-a")
    job = cl.submit("w-sleep", {"seconds": 3})
    cl.wait_job(job["id"], running, 30, "the job to run on the first worker")
    eventually(lambda: f"started {job['id']}" in cl.log(job["id"]), 10, "the first attempt's log")
    first.kill()  # kill -9 mid-job: no goodbye, its lease just runs out
    second = cl.start_worker("kill-b")
    done = cl.wait_end(job["id"], timeout=60)
    assert done["state"] == "succeeded", (done, cl.log(job["id"]), second.log())
    assert done["attempts"] == 2
    assert cl.ran_on(job["id"]) == ["kill-a", "kill-b"]
    attempts = cl.api("GET", f"/jobs/{job['id']}")["attempt_history"]
    assert [(a["ran_on"], a["state"]) for a in attempts] == [
        ("worker kill-a", "failed"),
        ("worker kill-b", "succeeded"),
    ]
    assert done["worker"] == "kill-b"
    history = cl.events(job["id"])
    assert any(e["reason"] == "worker_lost" for e in history), history
    assert cl.http.get(f"/api/v1/jobs/{job['id']}/outputs/done.txt").text == "done\n"
    log = cl.log(job["id"])  # both attempts' logs, each whole, the second after a marker line
    assert log.count(f"started {job['id']}\n") == 2 and log.endswith("finished\n"), log
    second_attempt = log.split("[labcloud] attempt 2 on worker kill-b\n")[1]
    assert second_attempt.count(f"started {job['id']}\n") == 1, log


def open_sink(scratch: Path) -> Path:
    """A file every job may append to: the workers run without a sandbox, their jobs as the job user (run
    by root: nobody), in work folders it can reach (``scratch``, unlike tmp_path, lets everyone through)."""
    sink = scratch / "sink.txt"
    sink.touch()
    sink.chmod(0o666)
    return sink


def test_many_quick_jobs_through_several_workers_run_exactly_once(cl: Cluster, open_scratch: Path) -> None:
    sink = open_sink(open_scratch)
    workers = [
        cl.start_worker(f"many-{i}", "--sandbox", "off", wait=False, work_dir=open_scratch / f"many-{i}")
        for i in range(8)
    ]
    for worker in workers:
        worker.wait_log("connected to", timeout=60)
    started = time.monotonic()
    ids = [cl.submit("w-quick", {"sink": str(sink)})["id"] for _ in range(JOBS)]

    def all_ended() -> list[dict[str, Any]] | None:
        jobs: list[dict[str, Any]] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"app": "w-quick", "limit": 200}
            if cursor:
                params["cursor"] = cursor
            page = cl.api("GET", "/jobs", params=params)
            jobs += page["items"]
            if not (cursor := page.get("next_cursor")):
                break
        return (
            jobs if len(jobs) == JOBS and all(j["state"] in ("succeeded", "failed") for j in jobs) else None
        )

    jobs = eventually(all_ended, 60 + JOBS * 0.5, f"{JOBS} jobs to end", interval=0.5)
    elapsed = time.monotonic() - started
    assert {j["state"] for j in jobs} == {"succeeded"}, Counter(j["state"] for j in jobs)
    assert {j["attempts"] for j in jobs} == {1}
    counts = Counter(sink_lines(sink))
    assert set(counts) == set(ids), "a job's side effect is missing or foreign"
    assert set(counts.values()) == {1}, {k: v for k, v in counts.items() if v != 1}
    per_worker = [w.log().count(": succeeded") for w in workers]
    assert sum(per_worker) == JOBS, per_worker
    assert sum(1 for n in per_worker if n) >= 2, per_worker
    print(
        f"{JOBS} jobs through 8 workers in {elapsed:.1f} s ({JOBS / elapsed:.0f}/s); per worker {per_worker}"
    )


def test_a_worker_with_room_for_several_jobs_takes_them_in_one_claim(cl: Cluster, open_scratch: Path) -> None:
    sink = open_sink(open_scratch)
    ids = [cl.submit("w-quick", {"sink": str(sink)})["id"] for _ in range(5)]  # 1 CPU each
    worker = cl.start_worker("batch", "--sandbox", "off", cpus=4, work_dir=open_scratch / "batch")
    for job_id in ids:
        assert cl.wait_end(job_id)["state"] == "succeeded"
    assert "took 4 jobs in one claim" in worker.log()  # as many as fit in its 4 CPUs, then the fifth
    assert Counter(sink_lines(sink)) == dict.fromkeys(ids, 1)
    assert {name for job_id in ids for name in cl.ran_on(job_id)} == {"batch"}


def test_a_stopped_worker_is_fenced_when_it_comes_back(cl: Cluster, open_scratch: Path) -> None:
    sink = open_sink(open_scratch)
    first = cl.start_worker("stop-a", "--sandbox", "off", work_dir=open_scratch / "stop-a")
    # The first attempt would write its side effect after a minute: fencing must stop it before that,
    # however slowly this machine moves today. The second attempt takes a second.
    job = cl.submit("w-sleep", {"seconds": 1, "first": "60", "sink": str(sink)})
    cl.wait_job(job["id"], running, 30, "the job to run on the first worker")
    first.signal(signal.SIGSTOP)  # its job's process keeps running; its heartbeats stop
    second = cl.start_worker("stop-b", "--sandbox", "off", work_dir=open_scratch / "stop-b")
    cl.wait_job(job["id"], lambda j: j["attempts"] == 2 and running(j), 30, "the job to move to stop-b")
    first.signal(signal.SIGCONT)
    log = first.wait_log("reporting nothing more", timeout=30)
    assert "took the job back" in log or "no longer ours" in log, log
    # its copy is killed (the job would have written its side effect at the end) and cleaned up
    eventually(lambda: not any((first.work_dir / "jobs").iterdir()), 30, "stop-a to drop its copy")
    done = cl.wait_end(job["id"], timeout=60)
    assert done["state"] == "succeeded" and done["attempts"] == 2, (done, second.log())
    assert cl.ran_on(job["id"]) == ["stop-a", "stop-b"]
    assert sink_lines(sink) == [job["id"]], "the job completed more than once"
    assert [e["to_state"] for e in cl.events(job["id"])].count("succeeded") == 1
    assert first.process.poll() is None  # fencing ends that job, not the worker
    assert "succeeded" not in first.log()


def test_labels_decide_which_worker_takes_a_job(cl: Cluster) -> None:
    plain = cl.start_worker("plain")
    board_job = cl.submit("w-spinnaker")
    plain_job = cl.submit("w-sleep", {"seconds": 0})
    assert cl.wait_end(plain_job["id"])["state"] == "succeeded"
    waiting = cl.job(board_job["id"])
    assert waiting["state"] == "queued"
    assert "platform=spinnaker" in waiting["message"], waiting
    cl.start_worker("board", labels=("platform=spinnaker",))
    done = cl.wait_end(board_job["id"])
    assert done["state"] == "succeeded" and cl.ran_on(board_job["id"]) == ["board"]
    assert "on the board" in cl.log(board_job["id"])
    assert plain.process.poll() is None


def test_a_label_the_worker_gives_itself_does_not_count(cl: Cluster) -> None:
    board_job = cl.submit("w-spinnaker")
    plain_job = cl.submit("w-sleep", {"seconds": 0})
    cl.start_worker("cmdline-board", "--label", "platform=spinnaker")
    # Claims take the oldest job that fits first: had the label counted, the board job would have gone.
    assert cl.wait_end(plain_job["id"])["state"] == "succeeded"
    assert cl.ran_on(plain_job["id"]) == ["cmdline-board"]
    assert cl.job(board_job["id"])["state"] == "queued"


def test_a_drained_worker_finishes_its_job_and_takes_no_more(cl: Cluster) -> None:
    worker = cl.start_worker("drain-a")
    first = cl.submit("w-sleep", {"seconds": 2})
    cl.wait_job(first["id"], running, 30, "the first job to run")
    out = cl.cli("workers", "drain", "drain-a")
    assert "draining" in out.stderr
    assert cl.worker_info("drain-a")["state"] == "draining"
    second = cl.submit("w-sleep", {"seconds": 0})
    assert cl.wait_end(first["id"])["state"] == "succeeded"
    worker.wait_log("draining", timeout=10)
    time.sleep(1.0)  # a claim would have come within milliseconds: give it ample time not to happen
    assert cl.job(second["id"])["state"] == "queued"
    assert worker.process.poll() is None
    cl.start_worker("drain-b")
    done = cl.wait_end(second["id"])
    assert done["state"] == "succeeded" and cl.ran_on(second["id"]) == ["drain-b"]


def test_a_revoked_worker_stops_with_exit_code_3(cl: Cluster) -> None:
    worker = cl.start_worker("revoke-a")
    job = cl.submit("w-sleep", {"seconds": 30})
    cl.wait_job(job["id"], running, 30, "the job to run")
    out = cl.cli("workers", "revoke", "revoke-a")
    assert "revoked" in out.stderr
    assert worker.wait_exit(timeout=30) == 3
    log = worker.log()
    assert "the worker token was revoked or is wrong; stopping" in log, log
    eventually(lambda: not any((worker.work_dir / "jobs").iterdir()), 10, "its job to be killed")
    again = cl.job(job["id"])
    assert again["state"] == "queued" and again["attempts"] == 1, again
    assert cl.worker_info("revoke-a")["state"] == "revoked"
    # a wrong token: the same message, at once
    bad = cl.start_worker("bad-token", token="lcw_not-a-token", wait=False)
    assert bad.wait_exit(timeout=30) == 3
    assert "the worker token was revoked or is wrong; stopping" in bad.log()


def test_cancel_reaches_a_running_job_within_a_heartbeat(cl: Cluster) -> None:
    worker = cl.start_worker("cancel-a")
    job = cl.submit("w-sleep", {"seconds": 60})
    cl.wait_job(job["id"], lambda j: running(j) and j["progress"] == 0.5, 30, "progress 0.5")
    # the live log arrives while the job runs (shipped every 0.25 s)
    eventually(lambda: f"started {job['id']}" in cl.log(job["id"]), 5, "the job's first line in its log")
    cl.api("POST", f"/jobs/{job['id']}/cancel")
    done = cl.wait_end(job["id"], timeout=30)
    assert done["state"] == "cancelled", done
    # from the cancel (the server's clock) to the worker stopping the job (the worker's: the same machine)
    asked = next(
        datetime.fromisoformat(e["at"]) for e in cl.events(job["id"]) if e["to_state"] == "cancelling"
    )
    line = next(x for x in worker.log().splitlines() if "cancelled by its owner" in x)
    reached = datetime.strptime(line[:23], "%Y-%m-%d %H:%M:%S,%f").astimezone()
    heartbeat = LEASE_S / 4  # the server's heartbeat_interval_s for this lease
    took = (reached - asked).total_seconds()
    assert took < heartbeat + 1.0, f"the cancel took {took:.2f} s to reach the worker"
    assert (datetime.fromisoformat(done["finished_at"]) - asked).total_seconds() < heartbeat + 5


def test_sigterm_lets_running_jobs_finish_and_a_second_cancels_them(cl: Cluster) -> None:
    # one CPU: while its job runs the worker has no claim waiting on the server (one that was waiting when
    # the signal came would still bring a job, which the worker then runs)
    worker = cl.start_worker("term-a")
    short = cl.submit("w-sleep", {"seconds": 2})
    cl.wait_job(short["id"], running, 30, "the job to run")
    worker.signal(signal.SIGTERM)
    worker.wait_log("taking no more jobs", timeout=10)
    later = cl.submit("w-sleep", {"seconds": 0})
    assert cl.wait_end(short["id"])["state"] == "succeeded"
    assert worker.wait_exit(timeout=30) == 0
    assert cl.job(later["id"])["state"] == "queued"
    cl.api("POST", f"/jobs/{later['id']}/cancel")

    worker = cl.start_worker("term-b")
    long = cl.submit("w-sleep", {"seconds": 60})
    cl.wait_job(long["id"], running, 30, "the long job to run")
    worker.signal(signal.SIGTERM)
    worker.wait_log("taking no more jobs", timeout=10)
    worker.signal(signal.SIGTERM)
    assert worker.wait_exit(timeout=30) == 0
    done = cl.job(long["id"])
    assert done["state"] == "cancelled", (done, worker.log())


def test_the_job_runs_on_while_the_server_is_unreachable(cl: Cluster) -> None:
    proxy = TcpProxy(int(cl.url.rsplit(":", 1)[1]))
    try:
        worker = cl.start_worker("net-a", server=proxy.url)
        job = cl.submit("w-ticks")
        eventually(lambda: "tick 5" in cl.log(job["id"]), 30, "the first ticks in the log")
        proxy.cut()  # shorter than a lease (3 s): the job must stay where it is
        time.sleep(1.0)  # the outage itself: nothing to wait for
        proxy.restore()
        done = cl.wait_end(job["id"], timeout=60)
    finally:
        proxy.close()
    log = cl.log(job["id"])
    assert done["state"] == "succeeded" and done["attempts"] == 1, (done, worker.log())
    ticks = [line for line in log.splitlines() if line.startswith("tick ")]
    assert ticks == [f"tick {i}" for i in range(1, 31)], log  # every line once, in order
    assert "retrying in" in worker.log()  # it did notice the outage


# ---------------------------------------------------------------------------------------------- pieces


def test_backoff_grows_with_jitter_up_to_its_cap() -> None:
    backoff = Backoff(base=0.25, cap=10.0)
    delays = [backoff.next() for _ in range(12)]
    for n, delay in enumerate(delays):
        full = min(10.0, 0.25 * 2**n)
        assert full / 2 <= delay <= full
    assert max(delays) <= 10.0 and delays[-1] >= 5.0
    backoff.reset()
    assert backoff.next() <= 0.25


def _fake_log_server(drop_once_at: int) -> tuple[bytearray, Any, list[tuple[int, int]]]:
    """A server-side log with the worker API's semantics; it loses its tail once (as after a crash)."""
    stored = bytearray()
    calls: list[tuple[int, int]] = []
    dropped = [False]

    def send(offset: int, data: bytes) -> int:
        calls.append((offset, len(data)))
        if offset > len(stored):
            return len(stored)  # a gap: 409 with the size
        stored.extend(data[len(stored) - offset :])
        if not dropped[0] and len(stored) > drop_once_at:
            dropped[0] = True
            del stored[drop_once_at:]
            return len(stored)
        return len(stored)

    return stored, send, calls


def test_log_shipper_sends_every_byte_in_order_batched_and_after_a_loss(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    stored, send, calls = _fake_log_server(drop_once_at=1000)
    shipper = LogShipper(path, send, interval_s=0.05, max_chunk=4096).start()
    with open(path, "ab", buffering=0) as fh:
        for i in range(400):
            fh.write(f"line {i} {'x' * (i % 50)}\n".encode())
            if i % 40 == 0:
                time.sleep(0.02)
    shipper.close(timeout=10)
    assert bytes(stored) == path.read_bytes()
    assert len(calls) < 100, "writes should be batched"
    assert shipper.offset == path.stat().st_size


def test_log_shipper_hands_the_log_s_last_bytes_over_for_the_finish(tmp_path: Path) -> None:
    """hand_over sends all but the last ``limit`` bytes and returns those (for the finish to carry); when
    the server lost bytes meanwhile, send_from sends again from where it says, and nothing is missing."""
    path = tmp_path / "job.log"
    stored, send, _ = _fake_log_server(drop_once_at=10**9)
    body = b"".join(f"line {i} {'y' * (i % 70)}\n".encode() for i in range(3000))
    path.write_bytes(body[:1])
    entered, gate = threading.Event(), threading.Event()

    def gated(offset: int, data: bytes) -> int:
        entered.set()
        assert gate.wait(10)
        return send(offset, data)

    # The hand-over comes while the shipper is busy sending (held at its first byte, the rest of the log
    # written meanwhile): it still leaves the last bytes for the finish, whenever it comes.
    shipper = LogShipper(path, gated, interval_s=0.05, max_chunk=4096).start()
    assert entered.wait(10)
    with open(path, "ab") as fh:
        fh.write(body[1:])
    with ThreadPoolExecutor(1) as pool:
        handing = pool.submit(shipper.hand_over, 1000, 10)
        eventually(lambda: shipper._hold_back is not None, 10, "the hand-over to be asked for")
        gate.set()
        offset, rest = handing.result(timeout=20)
    assert len(rest) == 1000 and offset == len(stored) == len(body) - len(rest)
    assert bytes(stored) + rest == body

    short = tmp_path / "short.log"
    short.write_bytes(b"")
    held, send2, _ = _fake_log_server(drop_once_at=10**9)
    quiet = LogShipper(short, send2, interval_s=60).start()  # it looks once at the start, then waits
    short.write_bytes(b"only a line\n")
    offset, rest = quiet.hand_over(limit=1000, timeout=10)
    assert offset == len(held) and bytes(held) + rest == b"only a line\n"

    del stored[5000:]  # the server lost its tail: the finish was answered with its size
    shipper.send_from(len(stored))
    assert bytes(stored) == body


def test_log_shipper_close_raises_what_stopped_it(tmp_path: Path) -> None:
    path = tmp_path / "job.log"
    path.write_bytes(b"hello\n")

    def send(offset: int, data: bytes) -> int:
        raise Fenced(409, "no longer yours")

    shipper = LogShipper(path, send, interval_s=0.01).start()
    with pytest.raises(Fenced):
        shipper.close(timeout=5)


def test_progress_is_throttled_and_the_latest_value_wins() -> None:
    sent: list[float] = []
    sender = ProgressSender(sent.append, interval_s=0.3).start()
    for i in range(101):
        sender.report(i / 100)
        time.sleep(0.005)
    eventually(lambda: sent and sent[-1] == 1.0, 5, "the last value to be sent")
    sender.stop()
    assert len(sent) <= 4, sent  # ~0.5 s of reports at most every 0.3 s


def _api(handler: Any) -> WorkerApi:
    return WorkerApi("http://server.test", transport=httpx.MockTransport(handler))


@pytest.mark.parametrize("refusal", [409, 413, 422])
def test_a_finish_whose_log_end_is_refused_sends_the_log_on_its_own_then_the_end(
    tmp_path: Path, refusal: int
) -> None:
    """409: the server lacks earlier bytes of the log (it says how many it has); 413, 422: it takes no
    log this large with the end. The worker sends the log through the log call from there, then the end
    without it: every byte of the log reaches the server before the end, in order."""
    from types import SimpleNamespace

    from labcloud.execution.run_end import RunEnd
    from labcloud.worker.http_reporter import HttpReporter

    body = b"".join(f"line {i}\n".encode() for i in range(500))
    held, finishes = bytearray(), []

    def server(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/log"):
            offset = int(request.headers["log-offset"])
            if offset > len(held):
                return httpx.Response(409, json={"size": len(held)})
            held[offset:] = request.content
            return httpx.Response(200, json={"size": len(held)})
        sent = json.loads(request.content)
        finishes.append(sent)
        if "log" in sent:
            if refusal == 409:
                held[:] = held[:20]  # the server lost part of what it had
                return httpx.Response(409, json={"size": len(held)})
            return httpx.Response(refusal, json={"detail": "too large"})
        return httpx.Response(200, json={"state": "succeeded"})

    api = _api(server)
    log_path = tmp_path / "job.log"
    log_path.write_bytes(body[:50])
    run = SimpleNamespace(
        id="j1",
        api=api,
        assignment={"features": ["finish_log"]},
        final_state="",
        call=lambda what: {"token": "lcj_x", "job_call": True, "what": what},
    )
    shipper = LogShipper(log_path, lambda o, d: _post(api, o, d), interval_s=60).start()
    eventually(lambda: len(held) == 50, 10, "the log's first bytes to be sent")  # then it waits a minute
    log_path.write_bytes(body)
    reporter = HttpReporter(run, shipper, ProgressSender(lambda f: None))  # type: ignore[arg-type]
    reporter.finish(RunEnd("exited", 0, ""))
    assert run.final_state == "succeeded"
    assert ["log" in f for f in finishes] == [True, False]
    assert bytes(held) == body


def _post(api: WorkerApi, offset: int, data: bytes) -> int:
    from labcloud.worker.http_reporter import post_log

    return post_log(api, "j1", {"token": "lcj_x", "job_call": True}, offset, data)


def test_api_retries_what_may_pass_and_stops_on_what_will_not() -> None:
    answers = iter([httpx.Response(503), httpx.Response(502), httpx.Response(200, json={"ok": True})])
    api = _api(lambda request: next(answers))
    assert api.json("POST", "/heartbeat", token="lcw_x", json={}) == {"ok": True}

    api = _api(lambda request: httpx.Response(401, json={"detail": "revoked"}))
    with pytest.raises(TokenRejected):
        api.call("POST", "/heartbeat", token="lcw_x")
    with pytest.raises(Fenced):  # a job token that no longer works: the job is not ours
        api.call("POST", "/jobs/1/log", token="lcj_x", job_call=True)

    fenced = {"type": "https://labcloud.dev/problems/fenced", "detail": "no longer yours"}
    api = _api(lambda request: httpx.Response(409, json=fenced))
    with pytest.raises(Fenced):
        api.call("POST", "/jobs/1/finish", token="lcj_x", job_call=True, accept=(409,))

    api = _api(lambda request: httpx.Response(409, json={"size": 12}))
    assert api.call("POST", "/jobs/1/log", token="lcj_x", accept=(409,)).json() == {"size": 12}
    with pytest.raises(WorkerApiError):
        api.call("POST", "/jobs/1/start", token="lcj_x")

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    api = _api(refuse)
    with pytest.raises(Unreachable):
        api.call("POST", "/heartbeat", token="lcw_x", tries=2)
    stop = threading.Event()
    threading.Timer(0.3, stop.set).start()
    with pytest.raises(Abandoned):
        api.call("POST", "/jobs/1/log", token="lcj_x", until=stop)


def test_downloads_are_checked_and_tokens_stay_with_the_server(tmp_path: Path) -> None:
    body = b"input bytes" * 1000
    digest = hashlib.sha256(body).hexdigest()
    seen: list[tuple[str, str | None]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((str(request.url), request.headers.get("Authorization")))
        if request.url.host == "store.test":
            return httpx.Response(200, content=body)
        if request.url.path.endswith("/damaged"):
            return httpx.Response(200, content=body[:-1] + b"!")
        return httpx.Response(200, content=body)

    api = _api(handler)
    path = tmp_path / "in.bin"
    with open(path, "wb") as target:
        target.write(b"stale bytes of an earlier try " * 2000)
        api.download("/api/v1/worker/jobs/1/inputs/2", target, token="lcj_x", size=len(body), sha256=digest)
    assert path.read_bytes() == body and seen[-1][1] == "Bearer lcj_x"
    with open(path, "wb") as target:
        api.download(
            "http://store.test/bucket/key?sig=1", target, token="lcj_x", size=len(body), sha256=digest
        )
    assert seen[-1][1] is None  # a presigned URL elsewhere never sees the job token
    with open(path, "wb") as target, pytest.raises(WorkerApiError, match="SHA-256"):
        api.download("/x/damaged", target, token="lcj_x", size=len(body), sha256=digest)


def test_container_settings_come_from_options_over_the_server_s_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LABCLOUD_CONTAINER_ENGINE", "podman")
    monkeypatch.setenv("LABCLOUD_PODMAN_OPTIONS", '["--root", "/srv/podman"]')
    monkeypatch.setenv("LABCLOUD_CONTAINER_RUN_OPTIONS", '["--ulimit=nofile=1024:1024"]')
    from_env = engine_options.settings_from()
    assert from_env.container_settings() == (
        "podman",
        "",
        ("--root", "/srv/podman"),
        ("--ulimit=nofile=1024:1024",),
        None,
    )
    given = engine_options.settings_from("Docker", "unix:///run/d.sock", "--runtime runc --root '/a b'", "[]")
    assert given.container_settings() == (
        "docker",
        "unix:///run/d.sock",
        ("--runtime", "runc", "--root", "/a b"),
        (),
        None,
    )
    # what a Slurm batch script passes to run-job, and a Celery worker to its tasks, reads back the same
    for key, value in engine_options.environment(given).items():
        monkeypatch.setenv(key, value)
    assert engine_options.settings_from() == given
    argv = engine_options.runner_options(given)
    options = dict(zip(argv[::2], argv[1::2], strict=True))
    names = ("container-engine", "docker-host", "podman-options", "container-run-options")
    assert engine_options.settings_from(*(options.get(f"--{n}") for n in names)) == given
    for bad in (("lxc",), (None, None, None, "--privileged"), (None, None, "[1, 2]"), (None, None, "'open")):
        with pytest.raises(ValueError):
            engine_options.settings_from(*bad)
