"""How a worker's run of a job reports (:class:`HttpReporter`): over the worker API, with the job token of
this attempt only, the log (shipped as it grows), progress, the outputs (uploaded one by one, each checked
by its SHA-256) and the end; the reporter of :mod:`labcloud.execution.runner` for a
:class:`~labcloud.worker.job.JobRun`."""

from __future__ import annotations

import base64
import hashlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx

from labcloud.execution import process
from labcloud.execution.attempt import Collected
from labcloud.execution.process import Handle
from labcloud.execution.run_end import RunEnd
from labcloud.execution.runner import JobPlan
from labcloud.protocol import FINISH_LOG, FINISH_LOG_MAX
from labcloud.worker import record
from labcloud.worker.api import Abandoned, Fenced, WorkerApi, WorkerApiError, file_chunks, quote_path
from labcloud.worker.logship import LogShipper, ProgressSender

if TYPE_CHECKING:
    from labcloud.worker.job import JobRun

log = logging.getLogger(__name__)
OUTPUT_TRIES = 3  # uploads that arrive different from the file on disk, before the file is skipped
UPLOAD_TIMEOUT = httpx.Timeout(30.0, connect=10.0, write=None, read=600.0, pool=None)


class HttpReporter:
    """The runner's :class:`~labcloud.execution.runner.Reporter` for a job run away from the server."""

    def __init__(self, run: JobRun, shipper: LogShipper, progress: ProgressSender) -> None:
        self.run = run
        self.api = run.api
        self.shipper = shipper
        self.sender = progress
        self.plan: JobPlan | None = None

    def begin(self) -> bool:
        state = self.run.assignment.get("state")
        if state != "running":  # not started with its claim: say so now
            answer = self.api.json("POST", f"/jobs/{self.run.id}/start", **self.run.call("start"), json={})
            state = (answer or {}).get("state")
        if state == "cancelling":
            return False
        if state != "running":
            raise RuntimeError(f"the server answered the start with state {state!r}")
        record.save(self.run.job_dir, self.api.server, self.run.assignment)  # for a restarted worker
        return True

    def launched(self, handle: Handle) -> None:
        self.run.handle = handle
        if self.run.forget.is_set():  # taken away while it was starting
            process.cancel(handle)

    def progress(self, fraction: float) -> None:
        self.sender.report(fraction)

    def cancel_requested(self) -> bool:
        return self.run.cancel.is_set()

    def gone(self) -> bool:
        return self.run.forget.is_set()

    def keep(self, collected: Collected, succeeded: bool) -> str | None:
        """Send every output file; say which could not be stored (named in the log too)."""
        self.sender.stop()
        unkept: list[str] = []
        for item in collected.files:
            if self.run.forget.is_set():
                raise Abandoned("outputs")
            try:
                self._put(item.rel, item.copy)
            except (Fenced, Abandoned):
                raise
            except WorkerApiError as exc:
                collected.skip(f"'{item.rel}': not stored ({exc.detail})")
                unkept.append(item.rel)
        if unkept:
            return f"{len(unkept)} output file(s) could not be stored: {', '.join(unkept[:5])}"
        task = self.plan.task if self.plan is not None else None
        if succeeded and task is not None:
            missing = task.missing([item.rel for item in collected.files])
            if missing:
                return f"the task left no file at {', '.join(missing)}"
        return None

    def _put(self, rel: str, path: Path) -> None:
        put_output(self.api, self.run.id, self.run.call(f"output {rel}"), rel, path)

    def finish(self, end: RunEnd) -> None:
        self.sender.stop()
        body = finish_body(end)
        # Every byte of the log is with the server before the end is: its last bytes come with the end
        # itself where the server takes them, else the log is sent whole first.
        if FINISH_LOG in self.run.assignment.get("features", ()):
            offset, rest = self.shipper.hand_over(FINISH_LOG_MAX)
            if rest:
                body["log"] = {"offset": offset, "data": base64.b64encode(rest).decode()}
        else:
            self.shipper.close()
        call = self.run.call("finish")
        refused = (409, 413, 422) if "log" in body else ()
        response = self.api.call("POST", f"/jobs/{self.run.id}/finish", **call, json=body, accept=refused)
        if response.status_code in refused:
            # 409: the server lacks earlier bytes of the log; 413, 422: it takes no log this large with the
            # end (its limits are set lower). The log goes on its own, then the end without it.
            held = response.json().get("size") if response.status_code == 409 else None
            self.shipper.send_from(int(held) if held is not None else int(body["log"]["offset"]))
            body.pop("log")
            response = self.api.call("POST", f"/jobs/{self.run.id}/finish", **call, json=body)
        answer = response.json() if response.content else None
        self.run.final_state = str((answer or {}).get("state", ""))
        log.info(
            "%s: %s (%s%s)",
            self.run,
            self.run.final_state,
            end.outcome,
            "" if end.exit_code is None else f" {end.exit_code}",
        )


# ------------------------------------------------------------------------------------- shared calls
# What any holder of a job token sends the same way: this reporter, and a device's job
# (:mod:`labcloud.worker.device`). ``call`` is the token, stop event and name of the call (``JobRun.call``).


def put_output(api: WorkerApi, job_id: str, call: dict[str, Any], rel: str, path: Path) -> dict[str, Any]:
    """Store one output file as ``rel``, streamed from disk; sent again when the server's SHA-256 differs
    from what was read (:class:`WorkerApiError` after :data:`OUTPUT_TRIES`). The server's record of it."""
    for _ in range(OUTPUT_TRIES):
        digests: list[Any] = []

        def body(path: Path = path, digests: list[Any] = digests) -> Any:
            digests.append(hashlib.sha256())
            return file_chunks(path, digests[-1])

        answer = api.json(
            "PUT",
            f"/jobs/{job_id}/outputs/{quote_path(rel)}",
            **call,
            body=body,
            headers={"Content-Length": str(path.stat().st_size), "Content-Type": "application/octet-stream"},
            timeout=UPLOAD_TIMEOUT,
        )
        sent = digests[-1].hexdigest() if digests else ""
        if not isinstance(answer, dict):
            return {}
        if answer.get("sha256") in (None, sent):
            return answer
        log.warning(
            "job %s: output %s arrived damaged (SHA-256 %s); sending it again", job_id, rel, answer["sha256"]
        )
    raise WorkerApiError(0, f"it arrived damaged {OUTPUT_TRIES} times")


def post_log(api: WorkerApi, job_id: str, call: dict[str, Any], offset: int, data: bytes) -> int:
    """Send the log's bytes from ``offset``; how much of the attempt's log the server has now (less than
    ``offset`` after a gap: send again from there)."""
    response = api.call(
        "POST",
        f"/jobs/{job_id}/log",
        **call,
        accept=(409,),
        body=data,
        headers={"Log-Offset": str(offset), "Content-Type": "application/octet-stream"},
    )
    try:
        size = int(response.json()["size"])
    except (ValueError, KeyError, TypeError):
        raise WorkerApiError(
            response.status_code, f"unexpected answer to a log chunk: {response.text[:200]}"
        ) from None
    if response.status_code == 409:
        log.info(
            "job %s: the server has %d bytes of the log, not %d; resending from there", job_id, size, offset
        )
    return size


def finish_body(end: RunEnd) -> dict[str, Any]:
    """The body of ``finish`` for how the run ended."""
    body: dict[str, Any] = {
        "outcome": end.outcome,
        "exit_code": end.exit_code,
        "message": end.message[:4000],
        "usage": end.usage,
    }
    if end.problem:
        body["problem"] = end.problem[:4000]
    if end.note:
        body["note"] = end.note[:4000]
    if end.image:
        body["image"] = end.image
    if end.steps is not None:
        body["steps"] = end.steps
    return body
