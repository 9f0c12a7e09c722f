"""The Slurm executor's settings: ``slurm_*`` in the configuration file, ``LABCLOUD_SLURM_*`` in the
environment."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from labcloud.settings import PluginSettings


class SlurmSettings(PluginSettings):
    model_config = SettingsConfigDict(env_prefix="LABCLOUD_SLURM_")

    poll_s: float = Field(
        5.0, gt=0, description="How often Slurm's queue is read (squeue) to notice jobs it ended."
    )
    runner_memory_mb: int = Field(
        256, ge=0, description="Added to a job's --mem: the runner beside the job counts in Slurm's limit."
    )
    array_max: int = Field(
        256,
        ge=1,
        le=1000,
        description="A sweep's jobs alike in resources go to Slurm as job arrays of up to this many tasks "
        "(1: each job its own sbatch). Keep it within the cluster's MaxArraySize.",
    )
    rest_url: str = Field(
        "", description="Submit and watch through slurmrestd at this URL instead of the commands (JWT auth)."
    )
    rest_user: str = Field(
        "", description="slurmrestd: the Slurm user jobs are submitted as; default the token's user."
    )
    rest_token: SecretStr = Field(
        SecretStr(""), description="slurmrestd: the JWT (scontrol token); see slurm_rest_token_file."
    )
    rest_token_file: Path | None = Field(
        None, description="slurmrestd: a file holding the JWT, read afresh on each call (for rotation)."
    )
    rest_api: str = Field("v0.0.38", description="slurmrestd: the API version its plugin serves.")
    bin_dir: str = Field("", description="Where sbatch, squeue, scancel live; empty means PATH.")
    extra_args: list[str] = Field(
        default_factory=list, description='Added to every sbatch, e.g. ["--account=lab"].'
    )

    @model_validator(mode="after")
    def _rest_needs_a_token(self) -> SlurmSettings:
        if self.rest_url and not (self.rest_token.get_secret_value() or self.rest_token_file):
            raise ValueError("slurm_rest_url needs slurm_rest_token or slurm_rest_token_file (a JWT)")
        return self
