"""Fixtures for storage tests: one S3 API server (moto) for the session, a fresh bucket and
the standard AWS environment per test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from service.storage.s3 import PART_SIZE, S3Storage, make_store
from tests.s3_server import AWS_ENV, AWS_ENV_CLEARED, S3Server, start_s3_server


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Credentials as production passes them: in the environment, read by obstore itself."""
    for name in AWS_ENV_CLEARED:
        monkeypatch.delenv(name, raising=False)
    for name, value in AWS_ENV.items():
        monkeypatch.setenv(name, value)
    return AWS_ENV


@pytest.fixture
def bucket(s3_server: S3Server) -> str:
    return s3_server.create_bucket()


def s3_storage(
    endpoint: str,
    bucket: str,
    *,
    prefix: str = "",
    public_url: str | None = None,
    presign_expires_s: int = 3600,
    part_size: int = PART_SIZE,
) -> S3Storage:
    """An S3Storage on `bucket` at `endpoint` (the region and credentials from aws_env)."""
    return S3Storage(
        make_store(bucket, None, endpoint),
        bucket=bucket,
        prefix=prefix,
        endpoint=endpoint,
        public_url=public_url,
        presign_expires_s=presign_expires_s,
        part_size=part_size,
    )
