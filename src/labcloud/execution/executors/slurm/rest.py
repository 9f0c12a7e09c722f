"""Slurm through slurmrestd (``slurm_rest_url``) instead of its commands, authenticated by a JWT.

Every request names the Slurm user (``X-SLURM-USER-NAME``: ``slurm_rest_user``, else the token's own user) and
carries the token (``X-SLURM-USER-TOKEN``: ``slurm_rest_token``, or ``slurm_rest_token_file`` read afresh on
each request so that it can be rotated; ``scontrol token`` output, ``SLURM_JWT=...``, is accepted as is). A
root or SlurmUser token may name another user: the jobs then run as that user.

What the ``openapi/v0.0.38`` plugin of Slurm 22.05 takes and answers (its ``/openapi/v3`` and its replies):

- ``POST /slurm/v0.0.38/job/submit`` ``{"script": ..., "job": {...}}``: the job's keys are checked (an
  unknown one is refused: ``Unknown key "mem"``); ``environment`` is required and is an object (a list of
  ``K=V`` is refused: "environment must be a dictionary"); ``partition: ""`` is refused ("Invalid partition
  name specified"), so it is left out for the default partition. The answer has ``job_id``, or HTTP 500 and
  ``errors`` (``{"error", "error_code"|"error_number", "description", "source"}``, not always all of them),
  e.g. ``Requested node configuration is not available`` for more memory than a node has.
- ``GET /slurm/v0.0.38/jobs``: every job slurmctld still remembers (``MinJobAge``), of every user and in every
  state (finished ones too, unlike ``squeue``), with ``job_state``, ``state_reason``, ``user_name``.
- ``GET /slurm/v0.0.38/job/{id}``: ``{"jobs": [...]}``; an unknown id is HTTP 500 with error 2017 ("Invalid
  job id specified"). ``exit_code`` is the raw wait status (exit 3 → 768, killed by SIGKILL → 9).
- ``DELETE /slurm/v0.0.38/job/{id}``: SIGKILL through slurmctld, as ``scancel`` (a finished job: no error).
- When slurmctld cannot be reached, the answers are errors too ("Unable to contact slurm controller",
  "Unspecified error"), after some 9 s; a bad or expired token: "Zero Bytes were transmitted or received" or
  "Unspecified error"; no token at all: HTTP 401 in plain text.

Slurm's refusal of a job raises :class:`EngineRefused` with its words; anything that may pass (the network,
slurmrestd or slurmctld unreachable, authentication) raises ``RuntimeError``: the reconcile loop retries it.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import Any

import httpx

from labcloud.execution.executors.engine import EngineRefused
from labcloud.execution.executors.slurm.batch import COMMAND_TIMEOUT_S, BatchJob, Ended
from labcloud.execution.executors.slurm.settings import SlurmSettings

log = logging.getLogger(__name__)

TIMEOUT = httpx.Timeout(COMMAND_TIMEOUT_S, connect=10)
# States of jobs that are over; slurmrestd lists them along with the pending and running ones.
FINISHED = frozenset(
    {
        "COMPLETED",
        "CANCELLED",
        "FAILED",
        "TIMEOUT",
        "NODE_FAIL",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "OUT_OF_MEMORY",
        "REVOKED",
    }
)
INVALID_JOB_ID = 2017  # ESLURM_INVALID_JOB_ID
NOT_FOUND = 9002  # slurmrestd's "Unable to find JobId=1234_5": an array task it does not know


class SlurmRest:
    """The :class:`~.batch.SlurmClient` that speaks to slurmrestd."""

    def __init__(self, options: SlurmSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.options = options  # with a token or a token file: SlurmSettings checks that
        self.api = options.rest_api
        self.extra = extra_properties(options.extra_args)
        self.http = httpx.Client(base_url=options.rest_url.rstrip("/"), timeout=TIMEOUT, transport=transport)

    # ------------------------------------------------------------------------------ the client

    def properties(self, job: BatchJob) -> dict[str, Any]:
        """The ``job`` of a submission: what :meth:`.commands.SlurmCommands.sbatch_args` asks of sbatch."""
        props: dict[str, Any] = {
            "name": job.name,
            "cpus_per_task": job.cpus,
            "time_limit": job.minutes,
            "environment": dict(job.environment),
            "current_working_directory": job.workdir,
            "standard_output": job.output,
        }
        if job.memory_mb:
            props["memory_per_node"] = job.memory_mb
        if job.gpus:
            props["gres"] = f"gpu:{job.gpus}"
        if job.partition:
            props["partition"] = job.partition
        if job.tasks:
            props["array"] = f"0-{job.tasks - 1}"
        return props | self.extra

    def submit(self, job: BatchJob) -> str:
        body = {"script": job.script, "job": self.properties(job)}
        answer = self._call("POST", f"/slurm/{self.api}/job/submit", json=body)
        errors = answer.get("errors") or []
        if errors:
            words = describe(errors)
            if transient(errors):
                raise RuntimeError(f"slurmrestd could not submit: {words}")
            raise EngineRefused(words)
        slurm_id = answer.get("job_id")
        if not isinstance(slurm_id, int):
            raise EngineRefused(f"slurmrestd answered no job id: {json.dumps(answer)[:300]}")
        return str(slurm_id)

    def cancel(self, slurm_id: str) -> None:
        """Best effort, as ``scancel``: a job that never got a runner would only find itself cancelled."""
        try:
            answer = self._call("DELETE", f"/slurm/{self.api}/job/{slurm_id}")
        except RuntimeError as exc:
            log.warning("could not cancel Slurm job %s: %s", slurm_id, exc)
            return
        errors = answer.get("errors") or []
        if errors and _numbers(errors) != {INVALID_JOB_ID}:
            log.warning("slurmrestd could not cancel Slurm job %s: %s", slurm_id, describe(errors))

    def queue(self) -> dict[str, tuple[str, str]]:
        answer = self._call("GET", f"/slurm/{self.api}/jobs")
        errors = answer.get("errors") or []
        if errors:
            raise RuntimeError(f"slurmrestd could not list jobs: {describe(errors)}")
        user = self._user()
        out = {}
        for job in answer.get("jobs") or []:
            state = str(job.get("job_state") or "")
            if job.get("user_name") == user and state not in FINISHED:
                for slurm_id in slurm_ids(job):
                    out[slurm_id] = (state, str(job.get("state_reason") or "None"))
        return out

    def ended(self, slurm_id: str) -> Ended | None:
        answer = self._call("GET", f"/slurm/{self.api}/job/{slurm_id}")
        errors = answer.get("errors") or []
        if errors:
            if _numbers(errors) == {INVALID_JOB_ID} or ("_" in slurm_id and _numbers(errors) == {NOT_FOUND}):
                return None  # slurmctld no longer remembers it (MinJobAge); without slurmdbd, nobody does
            raise RuntimeError(f"slurmrestd could not show Slurm job {slurm_id}: {describe(errors)}")
        for job in answer.get("jobs") or []:  # an array's task may come with its siblings
            if slurm_id in slurm_ids(job):
                return Ended(str(job.get("job_state") or ""), exit_code(job.get("exit_code")))
        return None

    def close(self) -> None:
        self.http.close()

    # ------------------------------------------------------------------------------ plumbing

    def _token(self) -> str:
        path = self.options.rest_token_file
        if path is not None:
            try:
                token = Path(path).read_text().strip()
            except OSError as exc:
                raise RuntimeError(f"cannot read slurm_rest_token_file {path}: {exc}") from exc
        else:
            token = self.options.rest_token.get_secret_value().strip()
        return token.removeprefix("SLURM_JWT=")

    def _user(self, token: str | None = None) -> str:
        if self.options.rest_user:
            return self.options.rest_user
        user = token_user(token if token is not None else self._token())
        if not user:
            raise RuntimeError("slurm_rest_user is not set and the token names no user")
        return user

    def _call(self, method: str, path: str, json: Any = None) -> dict[str, Any]:
        """slurmrestd's JSON answer (its HTTP 500 carries Slurm's errors); RuntimeError for anything else."""
        token = self._token()
        headers = {"X-SLURM-USER-NAME": self._user(token), "X-SLURM-USER-TOKEN": token}
        try:
            response = self.http.request(method, path, json=json, headers=headers)
        except httpx.HTTPError as exc:
            raise RuntimeError(f"slurmrestd at {self.options.rest_url}: {exc!r}") from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if not isinstance(answer, dict):
            status, text = response.status_code, response.text[:300]
            raise RuntimeError(f"slurmrestd answered {method} {path} with HTTP {status}: {text!r}")
        return answer


def slurm_ids(job: dict[str, Any]) -> list[str]:
    """What labcloud calls the Slurm job(s) of one record: its id; for an array's task ``<array>_<task>``;
    for an array's pending tasks, still one record (``array_task_string`` "3-9,12"), each of them."""
    array, task, pending = job.get("array_job_id"), job.get("array_task_id"), job.get("array_task_string")
    if not array:
        return [str(job.get("job_id"))]
    if task is not None:
        return [f"{array}_{task}"]
    out = []
    for part in str(pending or "").split("%")[0].split(","):  # "%4": at most 4 at once
        first, _, last = part.partition("-")
        if first.isdigit() and (not last or last.split(":")[0].isdigit()):
            step = int(last.split(":")[1]) if ":" in last else 1
            out += [f"{array}_{n}" for n in range(int(first), int(last.split(":")[0] or first) + 1, step)]
    return out


def exit_code(raw: Any) -> str:
    """slurmrestd's ``exit_code``, the raw wait status, as scontrol's ``code:signal``: 768 → ``3:0``, 9 →
    ``0:9`` (``""`` when there is none)."""
    if not isinstance(raw, int) or isinstance(raw, bool) or not 0 <= raw <= 0xFFFF:
        return ""  # also NO_VAL (0xfffffffe): no status yet
    low = raw & 0x7F
    if low == 0:  # exited
        return f"{(raw >> 8) & 0xFF}:0"
    if low != 0x7F:  # killed by a signal
        return f"0:{low}"
    return "0:0"  # stopped


def describe(errors: list[Any]) -> str:
    """slurmrestd's errors in words: each one's ``error``, with its ``description`` when that adds to it."""
    parts = []
    for error in errors:
        if not isinstance(error, dict):
            parts.append(str(error))
            continue
        text, detail = str(error.get("error") or ""), str(error.get("description") or "")
        if text and detail and detail != text:
            text = f"{text} ({detail})"
        parts.append(text or detail or json.dumps(error))
    return "; ".join(parts)[:500]


def transient(errors: list[Any]) -> bool:
    """Errors of communication (Slurm's 1000-1999: slurmctld unreachable) or of its sockets (5000-5999,
    also what a bad token gets): worth trying again, unlike Slurm saying no."""
    return any(1000 <= n < 2000 or 5000 <= n < 6000 for n in _numbers(errors))


def token_user(token: str) -> str:
    """The user a Slurm JWT is for (its ``sun`` claim, not verified: slurmctld does that)."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError):
        return ""
    return str(claims.get("sun") or "") if isinstance(claims, dict) else ""


def extra_properties(args: list[str]) -> dict[str, Any]:
    """``slurm_extra_args`` as job properties: ``--account=lab`` → ``account: "lab"``, ``--requeue`` →
    ``requeue: true``. The property names are slurmrestd's (mostly sbatch's long options with ``_``);
    slurmrestd refuses a job with one it does not know (``Unknown key``)."""
    out: dict[str, Any] = {}
    for arg in args:
        if not arg.startswith("--") or len(arg) < 3:
            raise ValueError(f"slurm_extra_args: {arg!r} cannot go to slurmrestd (use --name=value)")
        name, sep, value = arg[2:].partition("=")
        out[name.replace("-", "_")] = value if sep else True
    return out


def _numbers(errors: list[Any]) -> set[int]:
    numbers = set()
    for error in errors:
        if isinstance(error, dict):
            for key in ("error_number", "error_code"):
                if isinstance(error.get(key), int):
                    numbers.add(error[key])
    return numbers
