"""The Slurm executor: each job is an ``sbatch`` whose batch script runs ``labcloud run-job``.

Resources map to ``--cpus-per-task``, ``--mem``, ``--gres=gpu:N``, ``--time`` (the job's timeout plus
time to stage and upload) and ``--partition`` (the job's queue). The job token travels in the batch job's
environment (``--export`` names only it and PATH: nothing else of the server's environment leaves).

A sweep's jobs that the dispatcher admits together and that ask Slurm for the same (resources, partition,
container or not) go as one job array of up to ``slurm_array_max`` tasks: one sbatch, and one line each in
``squeue -r`` (``<array id>_<task>``, what labcloud then calls the job's Slurm job). The batch script picks
the task's job and token by ``SLURM_ARRAY_TASK_ID``: the tokens are in the script rather than in its
environment, which Slurm keeps alike (readable by the submitting account and Slurm's administrators).

Every ``slurm_poll_s`` the leader reads ``squeue``: a pending job's reason becomes its message ("waiting:
Resources"); a job Slurm no longer lists while labcloud still thinks it runs is looked up with ``scontrol``
(or ``sacct``) and settled by how Slurm ended it: time limit, out of memory, node failure (retried),
cancelled behind labcloud's back, or a runner that never reported.
"""

from __future__ import annotations

import logging
import math
import os
import shlex
import sys
import time
import uuid
from collections.abc import Hashable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import select

from labcloud.db.models import Job
from labcloud.execution import engine_options
from labcloud.execution.executors.engine import EngineExecutor, settle
from labcloud.execution.executors.slurm.batch import ARRAY_OUTPUT, BatchJob, Ended, SlurmClient, output_path
from labcloud.execution.executors.slurm.commands import SlurmCommands
from labcloud.execution.executors.slurm.rest import SlurmRest
from labcloud.execution.executors.slurm.settings import SlurmSettings
from labcloud.services import executor_refs
from labcloud.services.executor_refs import SlurmRef
from labcloud.services.job_states import FailureReason, JobState

log = logging.getLogger(__name__)

STAGING_SLACK_S = 300  # on top of the job's timeout: staging inputs and uploading outputs
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
RETRIED = {"NODE_FAIL", "BOOT_FAIL", "PREEMPTED", "REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"}


class SlurmExecutor(EngineExecutor):
    name = "slurm"
    ref_type = SlurmRef
    settings_model = SlurmSettings

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.options = SlurmSettings()
        self.client: SlurmClient = open_client(self.options)
        self.submit_lot = self.options.array_max

    def poll_interval(self) -> float:
        return self.options.poll_s

    # ------------------------------------------------------------------------------ submitting

    def queue_for(self, job: Job) -> str:
        return job.queue or ""

    def waiting_message(self, queue: str) -> str:
        return f"waiting in Slurm{f' partition {queue}' if queue else ''}"

    def runner_line(self, job: Job, job_id: str) -> str:
        """The command that runs the job's runner (``job_id``: the job's id, or a shell word naming it)."""
        command = self.settings.runner_command or f"{shlex.quote(sys.executable)} -m labcloud.worker.runjob"
        containers = ""
        if (job.spec or {}).get("runtime") == "container":  # the server's engine settings, as its sandbox's
            containers = " ".join(shlex.quote(a) for a in engine_options.runner_options(self.settings)) + " "
        return (
            f"exec {command} --server {shlex.quote(self.settings.effective_runner_url)} "
            f"--job {job_id} --work-dir {shlex.quote(self.settings.runner_work_dir)} "
            f"--sandbox {shlex.quote(self.settings.sandbox)} "
            f"--job-user {shlex.quote(self.settings.job_user)} "
            f"{containers}"
            f"--kill-grace {self.settings.kill_grace_s:g}\n"
        )

    def batch_script(self, job: Job) -> str:
        head = f"#!/bin/sh\n# labcloud job {job.id}, attempt {job.attempts}\n"
        return head + self.runner_line(job, str(job.id))

    def array_script(self, jobs: list[tuple[Job, str]]) -> str:
        """One script for an array's tasks: task N runs the N-th job, with its token."""
        first = jobs[0][0]
        cases = "".join(
            f"{n}) job={job.id} LABCLOUD_JOB_TOKEN={shlex.quote(token)} ;;  # attempt {job.attempts}\n"
            for n, (job, token) in enumerate(jobs)
        )
        return (
            "#!/bin/sh\n"
            f"# labcloud sweep {first.group_id}: {len(jobs)} jobs, one per array task\n"
            'case "$SLURM_ARRAY_TASK_ID" in\n'
            f"{cases}"
            '*) echo "labcloud: array task $SLURM_ARRAY_TASK_ID has no job" >&2; exit 1 ;;\n'
            "esac\n"
            "export LABCLOUD_JOB_TOKEN\n" + self.runner_line(first, '"$job"')
        )

    def batch_job(self, job: Job, token: str, queue: str) -> BatchJob:
        res = job.resources
        return BatchJob(
            name=f"labcloud-{job.id}",
            script=self.batch_script(job),
            cpus=max(1, math.ceil(res.cpus)),
            # Slurm counts the runner beside the job in the job's memory
            memory_mb=math.ceil(res.memory_mb + self.options.runner_memory_mb),
            gpus=res.gpus,
            minutes=math.ceil((res.timeout_s + STAGING_SLACK_S) / 60),
            partition=queue,
            environment={"PATH": os.environ.get("PATH", DEFAULT_PATH), "LABCLOUD_JOB_TOKEN": token},
        )

    def send(self, job: Job, token: str, queue: str) -> str:
        return self.client.submit(self.batch_job(job, token, queue))

    def batch_key(self, job: Job) -> Hashable | None:
        """A sweep's jobs that Slurm would be asked the same of go together, as one job array."""
        if job.group_id is None or self.options.array_max < 2:
            return None
        asks = self.batch_job(job, "", job.queue or "")
        container = (job.spec or {}).get("runtime") == "container"
        return (job.group_id, asks.cpus, asks.memory_mb, asks.gpus, asks.minutes, asks.partition, container)

    def send_together(self, jobs: list[tuple[Job, str]], queue: str) -> list[str]:
        """One job array per ``array_max`` jobs; each job's Slurm id is its task's, ``<array id>_<task>``."""
        ids: list[str] = []
        size = self.options.array_max
        for start in range(0, len(jobs), size):
            part = jobs[start : start + size]
            first, _ = part[0]
            array = replace(
                self.batch_job(first, "", queue),
                name=f"labcloud-sweep-{first.group_id}",
                script=self.array_script(part),
                environment={"PATH": os.environ.get("PATH", DEFAULT_PATH)},
                output=ARRAY_OUTPUT,
                tasks=len(part),
            )
            array_id = self.client.submit(array)
            ids += [f"{array_id}_{n}" for n in range(len(part))]
        return ids

    def withdraw(self, engine_id: str) -> None:
        self.client.cancel(engine_id)

    # ------------------------------------------------------------------------------ reconciling

    def reconcile(self) -> None:
        ours = {sid: job_id for job_id, ref in self.active_jobs() if (sid := executor_refs.engine_id(ref))}
        if not ours:
            return
        listed = self.client.queue()
        self._note_queue_states({job_id: sid for sid, job_id in ours.items() if sid in listed}, listed)
        changed = False
        for slurm_id, job_id in ours.items():
            if slurm_id not in listed:
                changed |= self._settle(job_id, slurm_id, self.client.ended(slurm_id))
        if changed:
            self.notify()

    def _note_queue_states(self, slurm_ids: dict[uuid.UUID, str], listed: dict[str, tuple[str, str]]) -> None:
        """Pending jobs say why they wait; a job still running long after its cancel is scancelled. One
        transaction for all of them, however long Slurm's queue."""
        overdue = []
        with self.db.session() as session:
            for job in session.scalars(select(Job).where(Job.id.in_(list(slurm_ids)))):
                slurm_id = slurm_ids[job.id]
                state, reason = listed[slurm_id]
                if state == "PENDING" and reason != "None" and job.state == JobState.QUEUED:
                    message = f"waiting: {reason} (Slurm job {slurm_id})"
                    if job.message != message:
                        job.message = message
                elif job.state == JobState.CANCELLING and job.updated_at is not None:
                    # The runner should have stopped it by now: make sure Slurm does.
                    held_for = time.time() - job.updated_at.timestamp()
                    if held_for > self.settings.kill_grace_s + 2 * self.settings.lease_seconds:
                        overdue.append((job.id, slurm_id))
        for job_id, slurm_id in overdue:
            log.warning("job %s: still running in Slurm long after cancel; scancel", job_id)
            self.client.cancel(slurm_id)

    def _settle(self, job_id: uuid.UUID, slurm_id: str, ended: Ended | None) -> bool:
        with self.db.session() as session:
            job = session.get(Job, job_id)
            if job is None or executor_refs.engine_id(job.executor_ref) != slurm_id:
                return False
            tail = _output_tail(output_path(f"labcloud-{job.id}", slurm_id))
            reason, message = explain(ended, slurm_id, taken=job.lease_expires_at is not None, output=tail)
            if reason == FailureReason.STAGING_FAILED and tail:
                message += f": {tail}"
            settle(session, job, reason, message)
            log.warning("job %s: %s", job_id, message)
            return True


def explain(
    ended: Ended | None, slurm_id: str, *, taken: bool, output: str = ""
) -> tuple[FailureReason, str]:
    """Why a job failed that Slurm ended without the runner's report (``output``: the end of the batch
    job's output, where slurmstepd says why it killed it)."""
    where = f"Slurm job {slurm_id}"
    if ended is None:
        return FailureReason.WORKER_LOST, f"{where} vanished from Slurm"
    state = ended.state.rstrip("+")
    if state == "CANCELLED":
        return FailureReason.SYSTEM_ERROR, f"{where} was cancelled in Slurm, not through labcloud (scancel)"
    if state in RETRIED:
        return FailureReason.WORKER_LOST, f"{where} ended with {state}"
    if not taken:
        return (
            FailureReason.STAGING_FAILED,
            f"the runner of {where} never reached the server ({state}, exit {ended.exit_code})",
        )
    if state == "TIMEOUT":
        return FailureReason.TIMEOUT, f"{where} reached its Slurm time limit"
    said = output.lower()
    if state == "OUT_OF_MEMORY" or any(
        w in said for w in ("exceeded memory limit", "exceeded job memory", "oom-kill")
    ):
        return FailureReason.OUT_OF_MEMORY, f"{where} ran out of memory"
    return FailureReason.WORKER_LOST, f"the runner of {where} ended without reporting ({state})"


def open_client(options: SlurmSettings) -> SlurmClient:
    """slurmrestd when ``slurm_rest_url`` is set, else the commands."""
    if options.rest_url:
        return SlurmRest(options)
    return SlurmCommands(options)


def _output_tail(path: str, limit: int = 600) -> str:
    """The end of a batch job's output, where it is readable here (one machine, or a shared /tmp)."""
    try:
        data = Path(path).read_bytes()[-limit:]
    except OSError:
        return ""
    return " | ".join(line for line in data.decode(errors="replace").splitlines() if line.strip())[-limit:]
