"""The S3 API server fixtures of the storage tests, for the archive read from S3."""

from tests.storage.conftest import aws_env, bucket, s3_server

__all__ = ["aws_env", "bucket", "s3_server"]
