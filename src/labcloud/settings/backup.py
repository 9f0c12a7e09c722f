"""Scheduled backups, made by the server that dispatches (see :mod:`labcloud.services.backup`)."""

from __future__ import annotations

from pydantic import BaseModel, Field, field_validator, model_validator


class BackupSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings`: where and how often the server backs itself up."""

    backup_dest: str = Field(
        "",
        description="Scheduled backups: a folder or s3://bucket/prefix that gets a backup in a dated "
        "subfolder every backup_every_h hours, made by the server that dispatches; empty: none.",
    )
    backup_every_h: float = Field(
        24.0, gt=0, description="Scheduled backups: hours between two backups (counted from the newest one)."
    )
    backup_keep_daily: int = Field(
        7, ge=0, description="Scheduled backups: keep the newest backup of each of this many newest days."
    )
    backup_keep_weekly: int = Field(
        4, ge=0, description="Scheduled backups: keep the newest backup of each of this many newest weeks."
    )
    backup_copy_objects: bool = Field(
        False,
        description="Scheduled backups on an S3 store: copy the stored objects into the backup, rather than "
        "list them (the local store's are always copied).",
    )
    backup_with_secrets: bool = Field(
        False, description="Scheduled backups: include the secrets (signing key, passwords in the settings)."
    )

    @field_validator("backup_dest", mode="after")
    @classmethod
    def _a_folder_or_s3(cls, value: str) -> str:
        if value.strip().endswith((".tar.gz", ".tgz")):
            raise ValueError(
                "scheduled backups go into dated subfolders: name a folder or s3://bucket/prefix"
            )
        return value.strip()

    @model_validator(mode="after")
    def _keeps_some(self) -> BackupSettings:
        if self.backup_dest and not (self.backup_keep_daily or self.backup_keep_weekly):
            raise ValueError("backup_keep_daily and backup_keep_weekly are both 0: backups would keep none")
        return self
