"""Finding this machine's container engine: the one the settings name, or (auto) Docker when its daemon
answers, else Podman; looked for again while none answers."""

from __future__ import annotations

import functools
import os
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from labcloud.execution.containers import ENGINE_KINDS, Engine, EngineKind, EngineUnavailable


def find_engine(
    choice: str,
    docker_host: str = "",
    podman_options: Sequence[str] = (),
    run_options: Sequence[str] = (),
    auth_file: Path | None = None,
) -> Engine:
    """The engine to use: ``choice`` is auto, docker, podman or apptainer. EngineUnavailable says why none.

    ``auto`` takes Docker when its daemon answers, else Podman when it is installed and answers.
    """
    choice = choice.strip().lower() or "auto"
    if choice not in ("auto", *ENGINE_KINDS):
        raise EngineUnavailable(f"unknown container engine {choice!r}; use auto, docker, podman or apptainer")
    candidates: list[EngineKind] = ["docker", "podman"] if choice == "auto" else [choice]  # type: ignore[list-item]
    problems: list[str] = []
    for kind in candidates:
        program = shutil.which(kind)
        if program is None:
            problems.append(f"{kind} is not installed")
            continue
        env: dict[str, str] = {}
        options: tuple[str, ...] = ()
        if kind == "docker":
            host = docker_host or os.environ.get("DOCKER_HOST", "")
            if host:
                env["DOCKER_HOST"] = host
        elif kind == "podman":
            options = tuple(podman_options)
        try:
            return Engine(kind, (program, *options), env, tuple(run_options), auth_file=auth_file).check()
        except EngineUnavailable as exc:
            problems.append(str(exc))
    raise EngineUnavailable("; ".join(problems) or "no container engine")


class EngineProbe:
    """This machine's engine, looked for when first needed and again (at most once a minute) while none
    answers: an engine started after labcloud is found without a restart."""

    RETRY_S = 60.0

    def __init__(
        self,
        choice: str,
        docker_host: str = "",
        podman_options: Sequence[str] = (),
        run_options: Sequence[str] = (),
        auth_file: Path | None = None,
    ) -> None:
        self.choice = choice
        self.docker_host = docker_host
        self.podman_options = tuple(podman_options)
        self.run_options = tuple(run_options)
        self.auth_file = auth_file
        self._engine: Engine | None = None
        self._problem = ""
        self._checked_at: float | None = None
        self._lock = threading.Lock()

    def get(self) -> tuple[Engine | None, str]:
        """The engine, or None and why there is none."""
        if self.choice == "none":
            return None, "container apps are turned off here (container_engine = none)"
        with self._lock:
            now = time.monotonic()
            if self._engine is None and (self._checked_at is None or now - self._checked_at > self.RETRY_S):
                self._checked_at = now
                try:
                    self._engine = find_engine(
                        self.choice, self.docker_host, self.podman_options, self.run_options, self.auth_file
                    )
                    self._problem = ""
                except EngineUnavailable as exc:
                    self._problem = str(exc)
            return self._engine, self._problem


class DeferredProbe(EngineProbe):
    """A probe made when first asked, by ``make`` (ValueError: why there is no engine)."""

    def __init__(self, make: Callable[[], EngineProbe]) -> None:
        super().__init__("auto")
        self._make = make
        self._made: EngineProbe | None = None
        self._refused = ""

    def get(self) -> tuple[Engine | None, str]:
        with self._lock:
            if self._made is None and not self._refused:
                try:
                    self._made = self._make()
                except ValueError as exc:
                    self._refused = f"container engine settings: {exc}"
        return self._made.get() if self._made is not None else (None, self._refused)


@functools.cache
def probe(
    choice: str,
    docker_host: str = "",
    podman_options: tuple[str, ...] = (),
    run_options: tuple[str, ...] = (),
    auth_file: Path | None = None,
) -> EngineProbe:
    """The one probe of these settings in this process (the executor's, the app listing's, the pulls')."""
    return EngineProbe(choice, docker_host, podman_options, run_options, auth_file)
