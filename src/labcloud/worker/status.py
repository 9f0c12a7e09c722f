"""A worker's status of its own (an instrument's sensors, its temperature...), read afresh for each heartbeat
and sent as ``telemetry["status"]``: the JSON object a command prints (``labcloud worker --status-command``)
and/or the one a file holds (``--status-file``, which the instrument's own program keeps up to date). When
both are given, the command's fields win over the file's. What goes wrong is sent too
(``telemetry["status_error"]``), so that the devices page says why a device has no status."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MAX_BYTES = 64 * 1024  # read at most this much (the server keeps far less: device_status_max_bytes)
MAX_ERROR = 400


@dataclass(frozen=True)
class StatusSource:
    command: str | None = None  # run by /bin/sh; its standard output is the status
    file: Path | None = None
    timeout_s: float = 5.0

    def __bool__(self) -> bool:
        return bool(self.command) or self.file is not None

    def read(self) -> tuple[dict[str, Any] | None, str | None]:
        """The status now (None when there is none to send) and what went wrong (None when nothing did)."""
        status: dict[str, Any] | None = None
        errors = []
        if self.file is not None:
            found, error = _parse(_read_file(self.file), f"the status file {self.file}")
            status, errors = found, [error] if error else []
        if self.command:
            output, problem = _run(self.command, self.timeout_s)
            found, error = _parse((output, problem), "the status command")
            if found is not None:
                status = {**(status or {}), **found}
            if error:
                errors.append(error)
        error = "; ".join(errors)
        return status, (error[: MAX_ERROR - 1] + "…" if len(error) > MAX_ERROR else error) or None


def _read_file(path: Path) -> tuple[bytes | None, str | None]:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_BYTES + 1)
    except OSError as exc:
        return None, exc.strerror or str(exc)
    return data, None


def _run(command: str, timeout_s: float) -> tuple[bytes | None, str | None]:
    """The command's standard output, or why there is none (it failed, or took longer than allowed: then it
    is killed, with whatever it started)."""
    try:
        proc = subprocess.Popen(
            ["/bin/sh", "-c", command],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except OSError as exc:
        return None, f"could not be started: {exc.strerror or exc}"
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return None, f"took longer than {timeout_s:g} s and was stopped"
    if proc.returncode != 0:
        said = err.decode(errors="replace").strip().splitlines()
        return None, f"exited with {proc.returncode}" + (f": {said[-1]}" if said else "")
    return out, None


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows")


def _parse(got: tuple[bytes | None, str | None], what: str) -> tuple[dict[str, Any] | None, str | None]:
    data, problem = got
    if data is None:
        return None, f"{what}: {problem}"
    if len(data) > MAX_BYTES:
        return None, f"{what}: more than {MAX_BYTES // 1024} KiB"
    try:
        value = json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        return None, f"{what}: not JSON ({exc})"
    if not isinstance(value, dict):
        return None, f"{what}: a status is a JSON object ({{...}}), not {type(value).__name__}"
    return value, None
