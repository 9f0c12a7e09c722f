"""The container engine's settings, which the server, its workers and its runners read alike."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from labcloud.settings.sources import SettingsBase


class ContainerSettings(SettingsBase):
    """The container engine's settings: the server's (part of :class:`Settings`), and those of every worker
    and runner, which read them from their options and the same ``LABCLOUD_*`` variables (no file)."""

    model_config = SettingsConfigDict(env_prefix="LABCLOUD_", extra="ignore", validate_default=True)

    container_engine: Literal["auto", "docker", "podman", "apptainer", "none"] = Field(
        "auto",
        description="What runs container apps: Docker when its daemon answers, else Podman (auto), one of "
        "them, Apptainer (untested), or none (container apps are listed as unavailable).",
    )
    docker_host: str = Field(
        "", description="The Docker daemon's address (else DOCKER_HOST, else the default)."
    )
    podman_options: list[str] = Field(
        default_factory=lambda: ["--runtime", "runc"],
        description="Podman's global options (JSON list), e.g. its --root and --runroot.",
    )
    container_run_options: list[str] = Field(
        default_factory=list,
        description='Options added to every container run (JSON list), e.g. ["--ulimit=nofile=20000:20000"]; '
        "only --ulimit, --dns, --add-host and --log-opt are accepted.",
    )
    container_auth_file: Path | None = Field(
        None,
        description="The registries' credentials for pulling container images (a Docker config.json, as "
        "`docker login` writes it): Docker finds it as DOCKER_CONFIG/config.json, Podman through "
        "--authfile. Given to pulls only, never shown.",
    )

    def container_settings(self) -> tuple[str, str, tuple[str, ...], tuple[str, ...], Path | None]:
        """The container engine's settings, as :func:`labcloud.execution.engine_probe.probe` takes them."""
        return (
            self.container_engine,
            self.docker_host,
            tuple(self.podman_options),
            tuple(self.container_run_options),
            self.container_auth_file,
        )

    @field_validator("container_run_options", mode="after")
    @classmethod
    def _harmless_run_options(cls, value: list[str]) -> list[str]:
        """Only options that cannot widen what a container may do: no mounts, devices, privileges."""
        allowed = ("--ulimit=", "--dns=", "--add-host=", "--log-opt=")
        bad = [option for option in value if not option.startswith(allowed)]
        if bad:
            raise ValueError(
                f"not accepted: {', '.join(bad)}; use --ulimit=..., --dns=..., --add-host=..., --log-opt=..."
            )
        return value
