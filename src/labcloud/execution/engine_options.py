"""The container engine's settings as workers and runners take them, and the bounds of what their heartbeats
say of an engine.

The settings are the server's (:class:`~labcloud.settings.ContainerSettings`): ``container_engine``,
``docker_host``, ``podman_options`` and ``container_run_options``, from a command's options over the same
``LABCLOUD_*`` variables over the defaults; a list is a JSON list or shell words. A Slurm batch script passes
the server's own to ``labcloud run-job`` (:func:`runner_options`); ``labcloud celery-worker`` hands its own to
its tasks through the environment (:func:`environment`).
"""

from __future__ import annotations

import json
import shlex
from typing import TYPE_CHECKING, Any

from labcloud.execution import engine_probe
from labcloud.execution.engine_probe import EngineProbe

if TYPE_CHECKING:
    from labcloud.settings import ContainerSettings

MAX_ENGINES = 4  # engines one heartbeat reports
MAX_IMAGES = 1000  # image references one engine reports
MAX_REFERENCE = 300  # characters of one reference (as a job's image column)
MAX_PROBLEM = 1000  # characters of why there is no engine


def words(text: str) -> list[str]:
    """A list given on a command line or in a variable: a JSON list, or shell words."""
    text = text.strip()
    if text.startswith("["):
        value = json.loads(text)
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValueError(f"not a JSON list of strings: {text}")
        return value
    return shlex.split(text)


def settings_from(
    engine: str | None = None,
    docker_host: str | None = None,
    podman_options: str | None = None,
    run_options: str | None = None,
) -> ContainerSettings:
    """The options given (None: not given) over the ``LABCLOUD_*`` variables over the defaults, checked as
    the server checks its own; ValueError with every problem in words."""
    from pydantic import ValidationError  # (a runner of a job that is no container job never loads these)

    from labcloud.settings import ContainerSettings

    given: dict[str, Any] = {}
    try:
        if engine is not None:
            given["container_engine"] = engine.strip().lower()
        if docker_host is not None:
            given["docker_host"] = docker_host.strip()
        if podman_options is not None:
            given["podman_options"] = words(podman_options)
        if run_options is not None:
            given["container_run_options"] = words(run_options)
        return ContainerSettings(**given)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise ValueError("; ".join(problems)) from None
    except ValueError as exc:  # not a list
        raise ValueError(str(exc)) from None


def probe(settings: ContainerSettings) -> EngineProbe:
    """The one probe of these settings in this process."""
    return engine_probe.probe(*settings.container_settings())


def probe_when_asked() -> EngineProbe:
    """The probe of the ``LABCLOUD_*`` variables' settings, read when a container job first asks for the
    engine: a runner of any other job never loads the settings (a tenth of a second of a short-lived
    runner's start-up). Settings it cannot take become the reason there is no engine."""
    return engine_probe.DeferredProbe(lambda: probe(settings_from()))


def runner_options(settings: ContainerSettings) -> list[str]:
    """The options of ``labcloud run-job`` that give a runner these settings."""
    argv = ["--container-engine", settings.container_engine]
    if settings.docker_host:
        argv += ["--docker-host", settings.docker_host]
    argv += ["--podman-options", json.dumps(settings.podman_options)]
    if settings.container_run_options:
        argv += ["--container-run-options", json.dumps(settings.container_run_options)]
    return argv


def environment(settings: ContainerSettings) -> dict[str, str]:
    """The ``LABCLOUD_*`` variables that give a process started from here these settings."""
    return {
        "LABCLOUD_CONTAINER_ENGINE": settings.container_engine,
        "LABCLOUD_DOCKER_HOST": settings.docker_host,
        "LABCLOUD_PODMAN_OPTIONS": json.dumps(settings.podman_options),
        "LABCLOUD_CONTAINER_RUN_OPTIONS": json.dumps(settings.container_run_options),
    }
