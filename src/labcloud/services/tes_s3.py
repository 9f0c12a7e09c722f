"""The object store GA4GH TES tasks may read inputs from and write outputs to with ``s3://bucket/key`` URLs:
one S3 endpoint and account an admin gives (``tes_s3_*``), and only the buckets ``tes_s3_buckets`` names.
Every user who may create tasks can read and write those buckets, so they are the lab's shared ones, never
labcloud's own store (refused by name). The server downloads and uploads; containers never see the keys.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from labcloud.settings import Settings
from labcloud.storage.s3 import parse_storage_url

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

CHUNK = 1 << 20


class S3Error(Exception):
    """An object could not be read or written; why (the bucket and key, never the keys of the account)."""


def split(url: str) -> tuple[str, str]:
    """(bucket, key) of ``s3://bucket/key``."""
    bucket, _, key = url[len("s3://") :].partition("/")
    return bucket, key


def refusal(settings: Settings, url: str, directory: bool, output: bool) -> str | None:
    """Why a task may not use this s3:// URL, or None."""
    if not settings.tes_s3_buckets:
        return "s3:// URLs are not enabled on this server (tes_s3_buckets); use labcloud:///path (your space)"
    bucket, key = split(url)
    if not bucket or not any(fnmatch.fnmatchcase(bucket, p) for p in settings.tes_s3_buckets):
        return f"bucket {bucket!r} is not one tasks may use here"
    if settings.storage_url.startswith("s3://") and parse_storage_url(settings.storage_url)[0] == bucket:
        return f"bucket {bucket!r} is labcloud's own store"
    if not key.strip("/") and not (output and directory):
        return "the URL names no object"
    if directory and not output:
        return "s3:// inputs are files (type FILE); a DIRECTORY input comes from your space"
    return None


def client(settings: Settings) -> S3Client:
    session = boto3.session.Session(
        aws_access_key_id=settings.tes_s3_access_key_id or None,
        aws_secret_access_key=settings.tes_s3_secret_access_key.get_secret_value() or None,
        region_name=settings.tes_s3_region,
    )
    endpoint = settings.tes_s3_endpoint_url or None
    config = Config(
        signature_version="s3v4",
        s3={"addressing_style": "path" if endpoint else "virtual"},
        connect_timeout=10,
        read_timeout=120,
        retries={"total_max_attempts": 3, "mode": "standard"},
    )
    found: S3Client = session.client("s3", endpoint_url=endpoint, config=config)
    return found


def download(settings: Settings, url: str, dest: BinaryIO) -> None:
    """Write the object at ``url`` into ``dest`` (at most ``tes_max_download_bytes``)."""
    bucket, key = split(url)
    limit = settings.tes_max_download_bytes
    try:
        answer: Any = client(settings).get_object(Bucket=bucket, Key=key)
        if int(answer.get("ContentLength") or 0) > limit:
            raise S3Error(f"s3://{bucket}/{key} is larger than {limit} bytes")
        size = 0
        for chunk in answer["Body"].iter_chunks(CHUNK):
            size += len(chunk)
            if size > limit:
                raise S3Error(f"s3://{bucket}/{key} is larger than {limit} bytes")
            dest.write(chunk)
    except (BotoCoreError, ClientError) as exc:
        raise S3Error(f"s3://{bucket}/{key} could not be read: {_words(exc)}") from None


def upload(settings: Settings, url: str, source: Path) -> None:
    bucket, key = split(url)
    try:
        client(settings).upload_file(str(source), bucket, key)
    except (BotoCoreError, ClientError) as exc:
        raise S3Error(f"s3://{bucket}/{key} could not be written: {_words(exc)}") from None


def _words(exc: Exception) -> str:
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        return str(error.get("Code") or error.get("Message") or "error")
    return type(exc).__name__
