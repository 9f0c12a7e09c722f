"""Where file bytes live and how much of them a user or project may keep."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class StorageSettings(BaseModel):
    """Settings of :class:`~labcloud.settings.Settings`: the blob store (the data dir or S3), uploads and
    storage limits."""

    max_upload_bytes: int = Field(50 * 2**30, ge=1, description="Largest file one upload may store.")
    storage_quota_bytes: int = Field(
        0, ge=0, description="Default storage limit per user (admins can set one per user); 0 means none."
    )
    project_storage_bytes: int = Field(
        0,
        ge=0,
        description="Default storage limit of a shared project's files (admins can set one per project); "
        "0 means none.",
    )
    storage_url: str = Field(
        "", description="Where file bytes live: empty for the data dir, or s3://bucket/prefix."
    )
    s3_endpoint_url: str = Field("", description="S3 endpoint, e.g. http://127.0.0.1:8333; empty for AWS.")
    s3_region: str = Field("us-east-1", description="S3 region.")
    s3_access_key_id: str = Field("", description="S3 access key; empty uses the standard AWS sources.")
    s3_secret_access_key: SecretStr = Field(SecretStr(""), description="S3 secret key.")
    presign_expiry_s: int = Field(
        900, ge=30, le=7 * 24 * 3600, description="Lifetime of presigned download and upload URLs."
    )
    upload_expiry_hours: float = Field(
        24, gt=0, description="Resumable uploads left unfinished this long are removed."
    )
