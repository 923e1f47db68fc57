"""GET /v1/batches/{id}/archive: a zip of the outputs under their manifest names and the
manifest, streamed, from local storage and from S3."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import zipfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from service.config import Settings
from service.manifests.zipstream import FLUSH_BYTES, ZipStream
from service.state import State
from service.storage.s3 import S3Storage
from tests.conftest import Caller
from tests.live import live_server
from tests.manifests.helpers import finished_batch
from tests.s3_server import S3Server


async def archive_of(
    client: httpx.AsyncClient, caller: Caller, batch_id: str
) -> tuple[zipfile.ZipFile, int]:
    """The archive, opened, and how many body chunks it came in."""
    chunks = 0
    buffer = io.BytesIO()
    path = f"/v1/batches/{batch_id}/archive"
    async with client.stream("GET", path, headers=caller.headers) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/zip"
        assert response.headers["content-disposition"] == f'attachment; filename="{batch_id}.zip"'
        async for chunk in response.aiter_raw():
            buffer.write(chunk)
            chunks += 1
    archive = zipfile.ZipFile(buffer)
    assert archive.testzip() is None  # every CRC checks out
    return archive, chunks


def assert_outputs_match_manifest(archive: zipfile.ZipFile, expected_files: list[str]) -> None:
    manifest = json.loads(archive.read("manifest.json"))
    assert archive.namelist() == [*expected_files, "manifest.json"]
    rows = {row["file"]: row for row in manifest["jobs"] if row["file"]}
    assert sorted(rows) == sorted(expected_files)
    for name, row in rows.items():
        data = archive.read(name)
        assert hashlib.sha256(data).hexdigest() == row["sha256"]
        assert len(data) == row["bytes"]
        assert archive.getinfo(name).compress_type == zipfile.ZIP_STORED
    assert manifest["totals"]["by_status"]["failed"] == 1


async def test_archive_holds_the_outputs_named_as_the_batch_named_them(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await finished_batch(client, caller, state)
    archive, _ = await archive_of(client, caller, batch_id)
    assert_outputs_match_manifest(archive, ["SKU-1.png", "SKU-2.png", "00003.jpg"])
    manifest = json.loads(archive.read("manifest.json"))
    assert manifest["jobs"][2]["error_code"] == "content_policy"
    assert manifest["jobs"][0]["variables"]["sku"] == "SKU-1"


async def test_an_output_missing_from_storage_is_left_out_and_said_so(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await finished_batch(client, caller, state)
    (state.settings.storage_dir / batch_id / "SKU-2.png").unlink()
    archive, _ = await archive_of(client, caller, batch_id)
    assert_outputs_match_manifest(archive, ["SKU-1.png", "00003.jpg"])
    rows = json.loads(archive.read("manifest.json"))["jobs"]
    assert (rows[1]["status"], rows[1]["file"]) == ("succeeded", None)


async def test_archive_over_real_http(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await finished_batch(client, caller, state)
    with live_server(state.settings) as url:
        async with httpx.AsyncClient(base_url=url) as real:
            archive, _ = await archive_of(real, caller, batch_id)
    assert_outputs_match_manifest(archive, ["SKU-1.png", "SKU-2.png", "00003.jpg"])


class TestS3:
    @pytest.fixture
    def settings(
        self, settings: Settings, s3_server: S3Server, bucket: str, aws_env: Any
    ) -> Settings:
        return Settings(
            **{
                **settings.model_dump(),
                "storage": "s3",
                "s3_bucket": bucket,
                "s3_prefix": "outputs/",
                "s3_endpoint_url": s3_server.endpoint,
            }
        )

    async def test_archive_streams_outputs_from_s3(
        self, client: httpx.AsyncClient, caller: Caller, state: State
    ) -> None:
        batch_id = await finished_batch(client, caller, state)
        archive, _ = await archive_of(client, caller, batch_id)
        assert_outputs_match_manifest(archive, ["SKU-1.png", "SKU-2.png", "00003.jpg"])
        assert not state.settings.storage_dir.exists()
        manifest = await client.get(f"/v1/batches/{batch_id}/manifest", headers=caller.headers)
        first = manifest.json()["jobs"][0]
        assert "X-Amz-Signature=" in first["url"]  # the presigned URL, as the jobs API shows
        assert hashlib.sha256(httpx.get(first["url"]).content).hexdigest() == first["sha256"]

    async def test_a_storage_that_is_down_is_a_503_before_any_byte(
        self, client: httpx.AsyncClient, caller: Caller, state: State, bucket: str
    ) -> None:
        batch_id = await finished_batch(client, caller, state)
        with socket.socket() as sock:  # a port nothing listens on
            sock.bind(("127.0.0.1", 0))
            closed = sock.getsockname()[1]
        state.settings.s3_endpoint_url = f"http://127.0.0.1:{closed}"
        state.storage = S3Storage.from_settings(state.settings)
        response = await client.get(f"/v1/batches/{batch_id}/archive", headers=caller.headers)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "storage_unavailable"


async def test_zip_stream_holds_at_most_a_flush_and_a_chunk() -> None:
    """The writer hands its bytes on as it makes them: 12 MiB of entries go out in pieces
    no larger than the flush size plus one chunk, and read back whole."""
    chunk = bytes(range(256)) * 256  # 64 KiB

    async def chunks(n: int) -> AsyncIterator[bytes]:
        for _ in range(n):
            yield chunk

    stream = ZipStream()
    when = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    pieces: list[bytes] = []
    async for piece in stream.add("a.bin", chunks(96), when=when, size=96 * len(chunk)):
        pieces.append(piece)
    async for piece in stream.add("b.json", chunks(96), when=when, compress=True):
        pieces.append(piece)
    pieces.append(stream.finish())
    assert len(pieces) > 20  # 6 MiB stored, in pieces of about 256 KiB
    assert max(map(len, pieces)) <= FLUSH_BYTES + len(chunk) + 1024
    archive = zipfile.ZipFile(io.BytesIO(b"".join(pieces)))
    assert archive.testzip() is None
    assert archive.read("a.bin") == chunk * 96 == archive.read("b.json")
    assert archive.getinfo("a.bin").date_time == (2026, 1, 2, 3, 4, 4)  # zip: 2-second steps
