"""The store on an S3-compatible object store (AWS S3, SeaweedFS, MinIO, Ceph ...), through boto3.

Objects live at ``{prefix}/{key}`` in one bucket (``storage_url = s3://bucket/prefix``). Downloads and
direct uploads go straight between the client and the store through presigned URLs, so the server's own
bandwidth is spent only on what it must read itself (zips, job inputs).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO
from urllib.parse import quote, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from labcloud.settings import Settings
from labcloud.storage.base import Storage

if TYPE_CHECKING:
    from mypy_boto3_s3.client import S3Client

CHUNK = 1 << 20
MiB = 1 << 20
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
MAX_PART_NUMBER = 10_000

_KEY = re.compile(r"[0-9A-Za-z]+/[0-9A-Za-z]+/[0-9A-Za-z]+")
_MISSING = {"404", "NoSuchKey", "NotFound"}
_NO_BUCKET = {"404", "NoSuchBucket", "NotFound"}


class StorageUnavailable(OSError):
    """The object store cannot be reached or refuses this server's credentials."""


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _check_key(key: str) -> str:
    if not _KEY.fullmatch(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def content_disposition(filename: str, kind: str = "attachment") -> str:
    """``attachment`` (or ``inline``) with an ASCII fallback name and the exact name in RFC 5987 form when
    it needs one."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename) or "download"
    header = f'{kind}; filename="{fallback}"'
    if fallback != filename:
        header += f"; filename*=UTF-8''{quote(filename, safe='')}"
    return header


def parse_storage_url(url: str) -> tuple[str, str]:
    """``s3://bucket/some/prefix`` → (``bucket``, ``some/prefix``); the prefix may be empty."""
    parts = urlsplit(url.strip())
    if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
        raise ValueError(f"storage_url must look like s3://bucket/prefix, not {url!r}")
    prefix = "/".join(p for p in parts.path.split("/") if p)
    return parts.netloc, prefix


class S3Storage(Storage):
    kind = "s3"

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 5,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.endpoint_url = endpoint_url or None
        config = Config(
            signature_version="s3v4",
            # Path style works everywhere an endpoint is given (an IP address or a single host name has no
            # bucket subdomains); AWS itself gets the virtual-hosted style it prefers.
            s3={"addressing_style": "path" if self.endpoint_url else "virtual"},
            connect_timeout=connect_timeout_s,
            read_timeout=read_timeout_s,
            retries={"total_max_attempts": max_attempts, "mode": "standard"},
        )
        session = boto3.session.Session(
            aws_access_key_id=access_key_id or None,
            aws_secret_access_key=(secret_access_key or None) if access_key_id else None,
            region_name=region or None,
        )
        self.client: S3Client = session.client("s3", endpoint_url=self.endpoint_url, config=config)
        # check() answers /readyz: one quick try rather than retries with back-off.
        self._probe: S3Client = session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            config=config.merge(
                Config(
                    connect_timeout=min(connect_timeout_s, 3.0),
                    read_timeout=min(read_timeout_s, 10.0),
                    retries={"total_max_attempts": 1, "mode": "standard"},
                )
            ),
        )
        self.transfer = TransferConfig(
            multipart_threshold=64 * MiB,
            multipart_chunksize=64 * MiB,
            max_concurrency=4,
            use_threads=True,
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        bucket, prefix = parse_storage_url(settings.storage_url)
        return cls(
            bucket,
            prefix,
            endpoint_url=settings.s3_endpoint_url or None,
            region=settings.s3_region or None,
            access_key_id=settings.s3_access_key_id or None,
            secret_access_key=settings.s3_secret_access_key.get_secret_value() or None,
        )

    def __repr__(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"S3Storage(s3://{self.bucket}/{self.prefix}{where})"

    def _name(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    # -- writing -----------------------------------------------------------------------------------------
    def put_file(self, key: str, source: Path) -> None:
        # One PUT (or a multipart upload completed at the end): readers never see part of the object.
        self.client.upload_file(str(source), self.bucket, self._name(key), Config=self.transfer)
        source.unlink()

    def delete(self, keys: list[str]) -> None:
        names = [self._name(k) for k in keys]
        for i in range(0, len(names), DELETE_BATCH):
            batch = names[i : i + DELETE_BATCH]
            answer = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": n} for n in batch], "Quiet": True}
            )
            errors = [e for e in answer.get("Errors", []) if e.get("Code") not in _MISSING]
            if errors:
                first = errors[0]
                raise OSError(
                    f"the object store did not delete {len(errors)} object(s), e.g. "
                    f"{first.get('Key')}: {first.get('Code')} {first.get('Message')}"
                )

    # -- reading -----------------------------------------------------------------------------------------
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return dict(self.client.head_object(Bucket=self.bucket, Key=self._name(key)))
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(f"no object {key} in the store")
        return int(head["ContentLength"])

    def iter_bytes(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        if start < 0 or (end is not None and end < 0):
            raise ValueError("start and end must not be negative")
        if end is not None and end <= start:
            return
        name = self._name(key)
        try:
            if start == 0 and end is None:  # the whole object (an empty one has no satisfiable range)
                answer = self.client.get_object(Bucket=self.bucket, Key=name)
            else:
                byte_range = f"bytes={start}-{'' if end is None else end - 1}"
                answer = self.client.get_object(Bucket=self.bucket, Key=name, Range=byte_range)
        except ClientError as exc:
            code = _error_code(exc)
            if code == "InvalidRange":  # start at or past the end: nothing to read
                if self.exists(key):
                    return
                raise FileNotFoundError(f"no object {key} in the store") from exc
            if code in _MISSING:
                raise FileNotFoundError(f"no object {key} in the store") from exc
            raise
        body = answer["Body"]
        try:
            for chunk in body.iter_chunks(CHUNK):
                if chunk:
                    yield chunk
        finally:
            body.close()

    def fetch(self, key: str, dest: BinaryIO) -> None:
        try:
            self.client.download_fileobj(self.bucket, self._name(key), dest, Config=self.transfer)
        except ClientError as exc:
            if _error_code(exc) in _MISSING:
                raise FileNotFoundError(f"no object {key} in the store") from exc
            raise

    def presigned_get(
        self, key: str, filename: str, expires_s: int, inline_as: str | None = None
    ) -> str | None:
        params = {
            "Bucket": self.bucket,
            "Key": self._name(key),
            "ResponseContentDisposition": content_disposition(
                filename, "inline" if inline_as else "attachment"
            ),
        }
        if inline_as:
            params["ResponseContentType"] = inline_as
        return self.client.generate_presigned_url("get_object", Params=params, ExpiresIn=expires_s)

    # -- uploads that bypass the server -------------------------------------------------------------------
    def start_multipart(self, key: str) -> str:
        answer = self.client.create_multipart_upload(Bucket=self.bucket, Key=self._name(key))
        return answer["UploadId"]

    def presign_part(self, key: str, upload_id: str, part_number: int, expires_s: int) -> str:
        if not 1 <= part_number <= MAX_PART_NUMBER:
            raise ValueError(f"part numbers run from 1 to {MAX_PART_NUMBER}, not {part_number}")
        return self.client.generate_presigned_url(
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": self._name(key),
                "UploadId": upload_id,
                "PartNumber": part_number,
            },
            ExpiresIn=expires_s,
        )

    def complete_multipart(self, key: str, upload_id: str, parts: list[tuple[int, str]]) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self._name(key),
            UploadId=upload_id,
            MultipartUpload={
                "Parts": [{"PartNumber": n, "ETag": _quoted(etag)} for n, etag in sorted(parts)],
            },
        )

    def abort_multipart(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._name(key), UploadId=upload_id)
        except ClientError as exc:
            if _error_code(exc) != "NoSuchUpload":  # already completed or aborted
                raise

    # -- housekeeping ------------------------------------------------------------------------------------
    def iter_keys(self, older_than: datetime) -> Iterator[str]:
        limit = older_than.timestamp()  # a naive datetime is local time, as for the local store
        start = f"{self.prefix}/" if self.prefix else ""
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=start)
        for page in pages:
            for obj in page.get("Contents", []):
                key = obj["Key"][len(start) :]
                if _KEY.fullmatch(key) and obj["LastModified"].timestamp() < limit:
                    yield key

    def check(self) -> None:
        """Reach the bucket, creating it when it does not exist yet (handy for a fresh dev store)."""
        where = self.endpoint_url or "AWS S3"
        try:
            try:
                self._probe.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if _error_code(exc) not in _NO_BUCKET:
                    raise
                self._create_bucket()
        except ClientError as exc:
            raise StorageUnavailable(
                f"the object store at {where} refused access to bucket {self.bucket!r}: "
                f"{_error_code(exc)} {exc.response.get('Error', {}).get('Message', '')}".rstrip()
            ) from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"cannot reach the object store at {where}: {exc}") from exc

    def _create_bucket(self) -> None:
        region = self.client.meta.region_name
        try:
            if region and region != "us-east-1":
                self.client.create_bucket(
                    Bucket=self.bucket,
                    CreateBucketConfiguration={"LocationConstraint": region},  # type: ignore[typeddict-item]
                )
            else:
                self.client.create_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if _error_code(exc) != "BucketAlreadyOwnedByYou":  # a concurrent check() made it
                raise


def _quoted(etag: str) -> str:
    etag = etag.strip()
    return etag if etag.startswith('"') else f'"{etag}"'
