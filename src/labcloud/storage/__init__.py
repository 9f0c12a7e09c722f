"""Where file bytes live. :func:`open_storage` picks the store the settings name."""

from __future__ import annotations

from labcloud.settings import Settings
from labcloud.storage.base import Storage


def open_storage(settings: Settings) -> Storage:
    url = settings.storage_url.strip()
    if not url:
        from labcloud.storage.local import LocalStorage

        return LocalStorage(settings.files_dir)
    if url.startswith("s3://"):
        from labcloud.storage.s3 import S3Storage

        return S3Storage.from_settings(settings)
    raise ValueError(f"storage_url must be empty (local disk) or s3://bucket/prefix, not {url!r}")
