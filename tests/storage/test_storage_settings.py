"""Storage settings: what is accepted, what is refused at once, and the startup check of the
`darkroom` processes against a real S3 API server."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.config import Settings, StorageKind
from service.state import build_storage
from service.storage.local import LocalStorage
from service.storage.s3 import S3Storage
from tests.s3_server import AWS_ENV, S3Server

DARKROOM = [sys.executable, "-m", "service.cli"]


def test_s3_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {
        "DARKROOM_STORAGE": "s3",
        "DARKROOM_S3_BUCKET": "covers",
        "DARKROOM_S3_PREFIX": "darkroom/",
        "DARKROOM_S3_REGION": "eu-west-3",
        "DARKROOM_S3_ENDPOINT_URL": "https://s3.example.com",
        "DARKROOM_STORAGE_PUBLIC_URL": "https://cdn.example.com/img",
        "DARKROOM_S3_PRESIGN_EXPIRES_S": "600",
        "DARKROOM_STORAGE_CACHE_CONTROL": "public, max-age=60",
    }.items():
        monkeypatch.setenv(name, value)

    settings = Settings(_env_file=None)  # type: ignore[call-arg]

    assert settings.storage is StorageKind.s3
    assert (settings.s3_bucket, settings.s3_prefix, settings.s3_region) == (
        "covers",
        "darkroom/",
        "eu-west-3",
    )
    assert settings.s3_endpoint_url == "https://s3.example.com"
    assert settings.storage_public_url == "https://cdn.example.com/img"
    assert settings.s3_presign_expires_s == 600
    storage = build_storage(settings)
    assert isinstance(storage, S3Storage)
    assert (storage.bucket, storage.prefix, storage.cache_control) == (
        "covers",
        "darkroom/",
        "public, max-age=60",
    )
    assert storage.url("b_1/x.png") == "https://cdn.example.com/img/darkroom/b_1/x.png"


def test_local_is_the_default(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path / "out", _env_file=None)  # type: ignore[call-arg]
    assert settings.storage is StorageKind.local
    storage = build_storage(settings)
    assert isinstance(storage, LocalStorage)
    assert storage.root == (tmp_path / "out").resolve()


def test_s3_without_a_bucket_is_a_config_error() -> None:
    with pytest.raises(ValidationError, match="DARKROOM_STORAGE=s3 needs DARKROOM_S3_BUCKET"):
        Settings(storage="s3", _env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize("prefix", ["", "darkroom/", "covers-", "a/b/", "tenant_1/out."])
def test_prefixes_accepted(prefix: str) -> None:
    assert Settings(s3_prefix=prefix, _env_file=None).s3_prefix == prefix  # type: ignore[call-arg]


@pytest.mark.parametrize("prefix", ["/abs/", "a//b", "../x", "a/./b/", "a b/", ".hidden/"])
def test_prefixes_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="DARKROOM_S3_PREFIX"):
        Settings(s3_prefix=prefix, _env_file=None)  # type: ignore[call-arg]


@pytest.mark.parametrize(
    ("field", "name"),
    [
        ("s3_endpoint_url", "DARKROOM_S3_ENDPOINT_URL"),
        ("storage_public_url", "DARKROOM_STORAGE_PUBLIC_URL"),
    ],
)
@pytest.mark.parametrize("url", ["s3.example.com", "ftp://x.example.com", "https://"])
def test_urls_must_be_http(field: str, name: str, url: str) -> None:
    with pytest.raises(ValidationError, match=name):
        Settings(**{field: url}, _env_file=None)  # type: ignore[arg-type]


def test_presigned_urls_last_at_most_seven_days() -> None:
    with pytest.raises(ValidationError, match="s3_presign_expires_s"):
        Settings(s3_presign_expires_s=7 * 24 * 3600 + 1, _env_file=None)  # type: ignore[call-arg]


def process_env(**darkroom: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DARKROOM_", "AWS_"))}
    env.update(AWS_ENV)
    env.update({f"DARKROOM_{name.upper()}": value for name, value in darkroom.items()})
    return env


@pytest.mark.parametrize("command", ["worker", "serve"])
def test_a_missing_bucket_stops_a_process_at_startup_in_one_line(
    s3_server: S3Server, tmp_path: Path, command: str
) -> None:
    env = process_env(storage="s3", s3_bucket="no-such-bucket", s3_endpoint_url=s3_server.endpoint)
    args = [*DARKROOM, command] + (["--port", "0"] if command == "serve" else [])
    result = subprocess.run(args, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)

    assert result.returncode == 2
    assert result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith(
        f"darkroom: S3 bucket 'no-such-bucket' at {s3_server.endpoint} is not usable: NoSuchBucket"
    )
    assert AWS_ENV["AWS_SECRET_ACCESS_KEY"] not in result.stderr


@pytest.mark.usefixtures("aws_env")
def test_an_existing_bucket_passes_the_startup_check(s3_server: S3Server, bucket: str) -> None:
    from service.cli import _check_config

    settings = Settings(
        storage="s3",
        s3_bucket=bucket,
        s3_endpoint_url=s3_server.endpoint,
        _env_file=None,  # type: ignore[call-arg]
    )
    _check_config(settings)  # returns: the process goes on starting


def test_s3_without_a_bucket_stops_a_command_in_one_line(tmp_path: Path) -> None:
    result = subprocess.run(
        [*DARKROOM, "worker"],
        env=process_env(storage="s3"),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        "darkroom: DARKROOM_STORAGE=s3 needs DARKROOM_S3_BUCKET (the bucket name)"
    ]
