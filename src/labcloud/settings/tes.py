"""The GA4GH TES endpoint's settings: the images, network, user and limits of a task, its downloads and
s3:// URLs."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


class TesSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings` for GA4GH TES tasks."""

    tes_allowed_images: list[str] = Field(
        default_factory=lambda: ["*"],
        description="GA4GH TES: the images a task's executors may name, as shell-style patterns (JSON list), "
        'e.g. ["labcloud/*", "quay.io/biocontainers/*"]; others are refused (400). The default allows '
        "every image, which means every image the container engine holds: labcloud never pulls for a task.",
    )
    tes_network: Literal["none", "default", "host"] = Field(
        "none",
        description="GA4GH TES: the network of a task's containers: none, the engine's default network, or "
        "the host's (e.g. for tasks that reach an object store on this machine, as Snakemake's do).",
    )
    tes_user: str = Field(
        "65534:65534", description="GA4GH TES: the uid:gid a task's containers run as (never root)."
    )
    tes_timeout_s: int = Field(
        86400, ge=1, le=30 * 86400, description="GA4GH TES: the time limit of a task, all executors together."
    )
    tes_default_ram_gb: float = Field(
        1.0, gt=0, description="GA4GH TES: the memory of a task that asks for none (resources.ram_gb)."
    )
    tes_max_content_bytes: int = Field(
        1 * 2**20, ge=128 * 1024, description="GA4GH TES: the largest inline content of one input."
    )
    tes_max_download_bytes: int = Field(
        10 * 2**30, ge=1, description="GA4GH TES: the largest file an http(s) input may bring."
    )
    tes_download_private: bool = Field(
        False,
        description="GA4GH TES: whether http(s) inputs may come from loopback, link-local or private "
        "addresses (checked after DNS resolution and on every redirect).",
    )
    tes_s3_buckets: list[str] = Field(
        default_factory=list,
        description="GA4GH TES: the buckets (shell-style patterns, JSON list) whose s3:// URLs tasks may "
        "read inputs from and write outputs to, with the tes_s3_* account; every user who may create tasks "
        "can then read and write them. Empty: s3:// URLs are refused.",
    )
    tes_s3_endpoint_url: str = Field("", description="GA4GH TES: the S3 endpoint of s3:// URLs; empty: AWS.")
    tes_s3_region: str = Field("us-east-1", description="GA4GH TES: the S3 region of s3:// URLs.")
    tes_s3_access_key_id: str = Field("", description="GA4GH TES: the access key for s3:// URLs.")
    tes_s3_secret_access_key: SecretStr = Field(
        SecretStr(""), description="GA4GH TES: the secret key for s3:// URLs (never shown)."
    )

    @field_validator("tes_user", mode="after")
    @classmethod
    def _tes_user_not_root(cls, value: str) -> str:
        from labcloud.registry.spec_parts import ContainerOptions  # (its checks: numeric, never root)

        return ContainerOptions(user=value).user
