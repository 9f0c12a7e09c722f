"""Container engines: the command lines that run an app's image as a job, and what labcloud asks them.

A container job runs like a process job: its supervisor starts the engine's client in the foreground
(``docker run``/``podman run`` without ``-d``), so the log streams into the job's log, the exit status is
the container's, and a restarted server finds the supervisor (and through it the container) again. What a
process job gets from bubblewrap and the supervisor, a container gets from the engine's own options: a
read-only root, no capabilities, no privilege escalation, a non-root user, no network, memory, CPU and
process limits. Only two folders of the host are mounted: the attempt's staged inputs (read-only) and its
output folder. Nothing of a job's parameters or inputs reaches the engine's options: the image reference
is checked against a strict grammar when the app file loads and comes before the command, values of
environment variables travel in a file only root can read, never on the client's command line.

Docker and Podman share one command line; Apptainer's is built behind the same interface, untested here
(it is not packaged for Debian).

Pulls from a private registry use the operator's auth file (a Docker ``config.json``): Docker finds it as
``config.json`` in a private folder named by ``DOCKER_CONFIG``, Podman through ``--authfile`` (and
``REGISTRY_AUTH_FILE``). Only a pull is given it; its name and the secrets in it are taken out of whatever the
engine says.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from labcloud.execution.container_run import (
    ATTEMPT_LABEL,
    INPUTS_MOUNT,
    JOB_LABEL,
    NAME_PREFIX,
    OUTPUT_MOUNT,
    ContainerRun,
    bind_option,
    cgroup_parent,
)

EngineKind = Literal["docker", "podman", "apptainer"]


ENGINE_KINDS: tuple[EngineKind, ...] = ("docker", "podman", "apptainer")


PIDS_LIMIT = 4096


TMPFS = "--tmpfs=/tmp:rw,nosuid,nodev,mode=1777"


PROBE_TIMEOUT_S = 10.0


PULL_TIMEOUT_S = 3600.0


AUTH_FILE_WORDS = "<the container auth file>"


class ImageUnavailable(Exception):
    """The engine does not have the image (or cannot say): the engine's own words."""


class EngineUnavailable(Exception):
    """No engine can run container apps here; why."""


@dataclass(frozen=True)
class Engine:
    """One engine's client: its program with global options, and variables added to its environment."""

    kind: EngineKind
    argv: tuple[str, ...]
    env: Mapping[str, str] = field(default_factory=dict)
    run_options: tuple[str, ...] = ()  # given by the operator (e.g. --ulimit nofile=20000:20000)
    # The engine manages control groups itself (cgroupfs): each container then goes under a parent group of
    # its own, which outlives it, so that its CPU time and peak memory can be read after it ended.
    cgroupfs: bool = False
    # The registries' credentials for pulls (a Docker config.json); never in a repr, a message or a log.
    auth_file: Path | None = field(default=None, repr=False)

    def command(self, *args: str) -> list[str]:
        return [*self.argv, *args]

    def environment(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """The client's whole environment: nothing of the server's but PATH and the engine's variables."""
        base = {"PATH": os.environ.get("PATH", os.defpath), "HOME": "/nonexistent"}
        return base | dict(self.env) | dict(extra or {})

    def call(
        self, *args: str, timeout: float = PROBE_TIMEOUT_S, env: Mapping[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(*args),
            env=self.environment(env),
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )

    # --- images --------------------------------------------------------------------------------------

    def image_id(self, image: str) -> str:
        """The content id (sha256:...) of a local image; ImageUnavailable when the engine has none."""
        if self.kind == "apptainer":
            return image  # a SIF file or URI: what runs is what is named
        try:
            done = self.call("image", "inspect", "--format", "{{.Id}}", image)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ImageUnavailable(f"the {self.kind} engine did not answer: {exc}") from None
        if done.returncode != 0:
            words = last_line(done.stderr) or f"{self.kind} image inspect exited with {done.returncode}"
            raise ImageUnavailable(f"image {image} is not available to {self.kind}: {words}")
        found = done.stdout.strip().splitlines()[0] if done.stdout.strip() else ""
        return found if found.startswith("sha256:") else f"sha256:{found}"

    def pull(self, image: str, timeout: float = PULL_TIMEOUT_S) -> str:
        """Fetch ``image`` from its registry (with the auth file, when there is one); its content id.
        ImageUnavailable with the engine's words when that fails or takes longer than ``timeout``."""
        if self.kind == "apptainer":
            raise ImageUnavailable("apptainer fetches an image when a job runs it; labcloud does not pull it")
        try:
            with self._credentials() as (options, env):
                done = self.call("pull", *options, image, timeout=timeout, env=env)
        except subprocess.TimeoutExpired:
            late = f"{self.kind} did not finish pulling {image} within {timeout:g} s"
            raise ImageUnavailable(late) from None
        except OSError as exc:
            raise ImageUnavailable(self.redact(f"{self.kind} pull could not be started: {exc}")) from None
        if done.returncode != 0:
            words = last_line(done.stderr) or f"{self.kind} pull exited with {done.returncode}"
            raise ImageUnavailable(self.redact(f"{self.kind} could not pull {image}: {words}"))
        return self.image_id(image)

    @contextlib.contextmanager
    def _credentials(self) -> Iterator[tuple[tuple[str, ...], dict[str, str]]]:
        """The pull's options and variables that hand the engine the auth file (none without one)."""
        if self.auth_file is None:
            yield (), {}
            return
        try:
            with open(self.auth_file, "rb"):
                pass
        except OSError as exc:
            why = exc.strerror or type(exc).__name__  # never the file's name
            raise ImageUnavailable(f"container_auth_file cannot be read: {why}") from None
        if self.kind == "docker":
            # The client reads DOCKER_CONFIG/config.json: a private folder holding a link to the file.
            with tempfile.TemporaryDirectory(prefix="labcloud-docker-") as folder:
                os.symlink(self.auth_file, Path(folder) / "config.json")
                yield (), {"DOCKER_CONFIG": folder}
        else:
            yield ("--authfile", str(self.auth_file)), {"REGISTRY_AUTH_FILE": str(self.auth_file)}

    def redact(self, text: str) -> str:
        """``text`` without the auth file's name or any secret it holds."""
        if self.auth_file is None:
            return text
        names = {str(self.auth_file), os.path.realpath(self.auth_file)}
        for secret in sorted(names | _secrets_in(self.auth_file), key=len, reverse=True):
            text = text.replace(secret, AUTH_FILE_WORDS if secret in names else "<secret>")
        return text

    # --- containers ----------------------------------------------------------------------------------

    def run_argv(self, run: ContainerRun) -> list[str]:
        """The client's command line that runs ``run`` in the foreground."""
        if self.kind == "apptainer":
            return self._apptainer_argv(run)
        argv = self.command(
            "run",
            "--name",
            run.name,
            "--pull=never",
            "--read-only",
            "--cap-drop=ALL",
            "--security-opt=no-new-privileges",
            f"--user={run.user}",
            f"--pids-limit={PIDS_LIMIT}",
            f"--memory={run.memory_mb}m",
            f"--memory-swap={run.memory_mb}m",
            f"--cpus={run.cpus:g}",
            *([] if any(target == "/tmp" for _, target, _ in run.mounts) else [TMPFS]),
            f"--label={JOB_LABEL}={run.job_id}",
            f"--label={ATTEMPT_LABEL}={run.attempt}",
            "--entrypoint=",
        )
        if run.network_mode:
            argv.append(f"--network={run.network_mode}")
        elif not run.network:
            argv.append("--network=none")
        if run.interactive:
            argv.append("--interactive")
        if self.cgroupfs:
            argv.append(f"--cgroup-parent={cgroup_parent(run.name)}")
        if run.gpus:
            argv += [f"--gpus={run.gpus}"] if self.kind == "docker" else ["--device=nvidia.com/gpu=all"]
        if run.workdir:
            argv.append(f"--workdir={run.workdir}")
        if run.inputs is not None:
            argv.append(bind_option(run.inputs, INPUTS_MOUNT, readonly=True))
        if run.output is not None:
            argv.append(bind_option(run.output, OUTPUT_MOUNT, readonly=False))
        argv += [bind_option(source, target, readonly) for source, target, readonly in run.mounts]
        argv.append(f"--env-file={run.env_file}")
        argv += list(self.run_options)
        return [*argv, run.image, *run.command]

    def _apptainer_argv(self, run: ContainerRun) -> list[str]:
        argv = self.command("exec", "--containall", "--cleanenv", "--no-home", "--no-privs")
        if not run.network:
            argv += ["--net", "--network", "none"]
        if run.workdir:
            argv += ["--pwd", run.workdir]
        if run.inputs is not None:
            argv += ["--bind", f"{run.inputs}:{INPUTS_MOUNT}:ro"]
        if run.output is not None:
            argv += ["--bind", f"{run.output}:{OUTPUT_MOUNT}"]
        for source, target, readonly in run.mounts:
            argv += ["--bind", f"{source}:{target}" + (":ro" if readonly else "")]
        if run.gpus:
            argv.append("--nv")
        argv += ["--env-file", str(run.env_file)]
        image = run.image if "://" in run.image or run.image.endswith(".sif") else f"docker://{run.image}"
        return [*argv, image, *run.command]

    def stop_argv(self, name: str, grace_s: float) -> list[str]:
        return self.command("stop", "--time", str(max(int(grace_s), 1)), name)

    def kill_argv(self, name: str) -> list[str]:
        return self.command("kill", name)

    def inspect_argv(self, name: str) -> list[str]:
        state = "{{.State.OOMKilled}} {{.State.ExitCode}} {{.State.Pid}} {{.Image}}"
        return self.command("inspect", "--format", state, name)

    def remove_argv(self, name: str) -> list[str]:
        """Remove the container, killing it at once if it still runs (Podman would wait 10 s first)."""
        if self.kind == "podman":
            return self.command("rm", "--force", "--time=0", name)
        return self.command("rm", "--force", name)

    def control(self, name: str, grace_s: float) -> dict[str, list[str]] | None:
        """The command lines the supervisor uses to stop, inspect and remove the container."""
        if self.kind == "apptainer":
            return None  # the client is the container: signals reach it as they reach a process
        return {
            "cgroup_parent": [cgroup_parent(name)] if self.cgroupfs else [],
            "stop": self.stop_argv(name, grace_s),
            "kill": self.kill_argv(name),
            "inspect": self.inspect_argv(name),
            "remove": self.remove_argv(name),
        }

    def remove(self, name: str) -> None:
        if self.kind != "apptainer":
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                self.call(*self.remove_argv(name)[len(self.argv) :], timeout=60)

    def labelled(self) -> list[str]:
        """Names of the containers labcloud started on this engine (running or not)."""
        if self.kind == "apptainer":
            return []
        try:
            done = self.call("ps", "--all", "--filter", f"label={JOB_LABEL}", "--format", "{{.Names}}")
        except (OSError, subprocess.TimeoutExpired):
            return []
        return [n for n in done.stdout.split() if n.startswith(NAME_PREFIX)] if done.returncode == 0 else []

    def check(self) -> Engine:
        """This engine as it answers (with how it manages control groups); EngineUnavailable if not."""
        args: tuple[str, ...] = ("--version",)
        if self.kind == "docker":
            args = ("info", "--format", "{{.CgroupDriver}}")
        elif self.kind == "podman":
            args = ("info", "--format", "{{.Host.CgroupManager}}")
        try:
            done = self.call(*args)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EngineUnavailable(f"{self.kind} does not answer: {exc}") from None
        if done.returncode != 0:
            words = last_line(done.stderr) or f"exit status {done.returncode}"
            raise EngineUnavailable(f"{self.kind} does not answer: {words}")
        return dataclasses.replace(self, cgroupfs=done.stdout.strip() == "cgroupfs")


def _secrets_in(auth_file: Path) -> set[str]:
    """The strings of the auth file that could be secrets: each value (of 6 characters or more), and the
    password in an ``auth`` value (base64 of user:password)."""
    try:
        data = json.loads(Path(auth_file).read_bytes())
    except (OSError, ValueError):
        return set()
    found: set[str] = set()
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            pending += list(item.values())
        elif isinstance(item, list):
            pending += item
        elif isinstance(item, str) and len(item) >= 6:
            found.add(item)
            with contextlib.suppress(ValueError):  # each decoding is shorter: this ends
                pending.append(base64.b64decode(item, validate=True).decode().partition(":")[2])
    return found


def last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else ""
