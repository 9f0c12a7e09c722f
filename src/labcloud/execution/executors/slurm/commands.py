"""Slurm through its commands: sbatch, squeue, scontrol, sacct and scancel, from ``slurm_bin_dir`` or PATH.

They run with the server's environment minus labcloud's own settings (``LABCLOUD_*``, secrets among them);
a batch job gets only what its :class:`~.batch.BatchJob` names (``--export``).
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from pathlib import Path

from labcloud.execution.executors.engine import EngineRefused
from labcloud.execution.executors.slurm.batch import COMMAND_TIMEOUT_S, BatchJob, Ended
from labcloud.execution.executors.slurm.settings import SlurmSettings


class SlurmCommands:
    """sbatch, squeue, scontrol, sacct and scancel, from ``slurm_bin_dir`` or PATH."""

    def __init__(self, options: SlurmSettings) -> None:
        self.options = options

    def _run(
        self, *args: str, env: dict[str, str] | None = None, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        bin_dir = self.options.bin_dir
        return subprocess.run(
            [str(Path(bin_dir) / args[0]) if bin_dir else args[0], *args[1:]],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            env=env or _environment(),
            check=False,
        )

    def sbatch_args(self, job: BatchJob) -> list[str]:
        args = [
            "sbatch",
            "--parsable",
            f"--job-name={job.name}",
            f"--cpus-per-task={job.cpus}",
            f"--time={job.minutes}",
            f"--output={job.output}",
            f"--chdir={job.workdir}",
            f"--export={','.join(sorted(job.environment))}",
        ]
        if job.memory_mb:
            args.append(f"--mem={job.memory_mb}M")
        if job.gpus:
            args.append(f"--gres=gpu:{job.gpus}")
        if job.partition:
            args.append(f"--partition={job.partition}")
        if job.tasks:
            args.append(f"--array=0-{job.tasks - 1}")
        return [*args, *self.options.extra_args]

    def submit(self, job: BatchJob) -> str:
        env = _environment() | job.environment
        done = self._run(*self.sbatch_args(job), env=env, stdin=job.script)
        if done.returncode != 0:
            raise EngineRefused(_last_line(done.stderr) or f"sbatch exited with {done.returncode}")
        slurm_id = done.stdout.strip().split(";")[0]
        if not slurm_id.isdigit():
            raise EngineRefused(f"sbatch answered {done.stdout.strip()!r}")
        return slurm_id

    def cancel(self, slurm_id: str) -> None:
        self._run("scancel", slurm_id)

    def queue(self) -> dict[str, tuple[str, str]]:
        # -r: an array's tasks one per line (1234_5), pending ones too
        done = self._run("squeue", "-h", "-r", "-u", getpass.getuser(), "-o", "%i|%T|%r")
        if done.returncode != 0:
            raise RuntimeError(f"squeue failed: {_last_line(done.stderr)}")
        out = {}
        for line in done.stdout.splitlines():
            parts = line.strip().split("|")
            if len(parts) == 3:
                out[parts[0]] = (parts[1], parts[2])
        return out

    def ended(self, slurm_id: str) -> Ended | None:
        """scontrol while slurmctld remembers the job (MinJobAge), then sacct."""
        done = self._run("scontrol", "show", "job", "-o", slurm_id)
        if done.returncode == 0:
            state = re.search(r"\bJobState=(\S+)", done.stdout)
            code = re.search(r"\bExitCode=(\S+)", done.stdout)
            if state:
                return Ended(state.group(1), code.group(1) if code else "")
        for extra in ([], ["-c"]):  # -c: the job completion file, where there is no accounting daemon
            done = self._run("sacct", *extra, "-n", "-P", "-j", slurm_id, "-o", "JobID,State,ExitCode")
            for line in done.stdout.splitlines() if done.returncode == 0 else []:
                parts = line.split("|")
                if len(parts) >= 3 and parts[0] == slurm_id:
                    return Ended(parts[1].split()[0], parts[2])
        return None


def _environment() -> dict[str, str]:
    """The server's environment for Slurm's commands, without labcloud's own settings (secrets)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("LABCLOUD_")}


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1][:500] if lines else ""
