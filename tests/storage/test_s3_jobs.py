"""Jobs end to end with DARKROOM_STORAGE=s3: the output goes to a real S3 API server (moto),
output.url fetches it, and /v1/jobs/{id}/output redirects there."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from PIL import Image

from service.config import Settings, StorageKind
from service.state import State
from service.storage.base import StorageUnavailable
from service.storage.s3 import S3Storage
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.s3_server import S3Server

PREFIX = "darkroom/"
JOB = {"prompt": "a lighthouse at dusk", "output_name": "lighthouse", "width": 96, "height": 64}


@pytest.fixture
def settings(settings: Settings, s3_server: S3Server, bucket: str, aws_env: Any) -> Settings:
    """The shared test settings, storing in a fresh bucket of the session's S3 server."""
    return Settings(
        **{
            **settings.model_dump(),
            "storage": "s3",
            "s3_bucket": bucket,
            "s3_prefix": PREFIX,
            "s3_endpoint_url": s3_server.endpoint,
        }
    )


@pytest.fixture
def spare_s3() -> Iterator[S3Server]:
    """A server of this test's own, which it may stop."""
    server = S3Server()
    server.start()
    try:
        yield server
    finally:
        server.stop()


async def only_job(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/batches/{batch_id}/jobs", headers=caller.headers)
    [job] = response.json()["items"]
    return dict(job)


def assert_is_the_output(response: httpx.Response, output: dict[str, Any]) -> None:
    assert response.status_code == 200
    assert hashlib.sha256(response.content).hexdigest() == output["sha256"]
    assert len(response.content) == output["bytes"]
    assert response.headers["content-type"] == output["content_type"] == "image/png"
    assert response.headers["cache-control"] == "public, max-age=31536000, immutable"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("PNG", (96, 64))


async def test_job_output_is_stored_in_s3_and_served_by_presigned_url(
    client: httpx.AsyncClient, caller: Caller, state: State, bucket: str
) -> None:
    assert state.settings.storage is StorageKind.s3
    batch_id = await submit(client, caller, {"jobs": [JOB]})
    await run_until_idle(state)

    job = await only_job(client, caller, batch_id)
    assert job["status"] == "succeeded"
    output = job["output"]
    url = urlsplit(output["url"])
    assert url.path == f"/{bucket}/{PREFIX}{batch_id}/lighthouse.png"
    assert "X-Amz-Signature=" in url.query
    assert_is_the_output(httpx.get(output["url"]), output)
    shown = await client.get(f"/v1/jobs/{job['id']}", headers=caller.headers)
    assert urlsplit(shown.json()["output"]["url"]).path == url.path

    redirect = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
    assert redirect.status_code == 307
    assert urlsplit(redirect.headers["location"]).path == url.path
    assert_is_the_output(httpx.get(redirect.headers["location"]), output)
    assert not state.settings.storage_dir.exists()  # nothing went to local disk


async def test_public_base_url_is_the_output_url(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.settings.storage_public_url = "https://cdn.example.com"
    state.storage = S3Storage.from_settings(state.settings)
    batch_id = await submit(client, caller, {"jobs": [JOB]})
    await run_until_idle(state)

    job = await only_job(client, caller, batch_id)
    expected = f"https://cdn.example.com/{PREFIX}{batch_id}/lighthouse.png"
    assert job["output"]["url"] == expected
    redirect = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
    assert (redirect.status_code, redirect.headers["location"]) == (307, expected)


async def test_a_failing_bucket_retries_the_job_until_it_is_back(
    client: httpx.AsyncClient, caller: Caller, state: State, spare_s3: S3Server
) -> None:
    bucket = spare_s3.create_bucket()
    state.settings.s3_endpoint_url, state.settings.s3_bucket = spare_s3.endpoint, bucket
    state.storage = S3Storage.from_settings(state.settings)
    spare_s3.stop()

    batch_id = await submit(client, caller, {"jobs": [JOB]})
    await run_until_idle(state)

    job = await only_job(client, caller, batch_id)
    assert job["status"] == "queued"  # to be retried, not failed
    attempts = await client.get(f"/v1/jobs/{job['id']}/attempts", headers=caller.headers)
    [first] = attempts.json()
    assert (first["outcome"], first["error_code"]) == ("retry", "storage_unavailable")
    assert f"s3://{bucket}/{PREFIX}{batch_id}/lighthouse.png" in first["error_message"]
    assert spare_s3.endpoint in first["error_message"]

    spare_s3.start()  # moto comes back empty: its bucket is made again
    spare_s3.create_bucket(bucket)
    await run_until_idle(state, wait_for_deferred=True)

    job = await only_job(client, caller, batch_id)
    assert (job["status"], job["attempts"]) == ("succeeded", 2)
    assert_is_the_output(httpx.get(job["output"]["url"]), job["output"])


class Unlinked(S3Storage):
    """A storage with no URL of its own (like local files), on S3 to show the general path."""

    def url(self, key: str) -> None:  # type: ignore[override]
        self.path(key)


async def test_a_storage_without_urls_is_streamed_by_the_api(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    state.storage = Unlinked.from_settings(state.settings)
    batch_id = await submit(client, caller, {"jobs": [JOB]})
    await run_until_idle(state)

    job = await only_job(client, caller, batch_id)
    output = job["output"]
    assert output["url"] == f"http://testserver/v1/jobs/{job['id']}/output"
    served = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
    assert served.status_code == 200
    assert hashlib.sha256(served.content).hexdigest() == output["sha256"]
    assert served.headers["content-type"] == "image/png"


async def test_a_storage_that_cannot_sign_answers_503_not_500(
    client: httpx.AsyncClient, caller: Caller, state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_id = await submit(client, caller, {"jobs": [JOB]})
    await run_until_idle(state)

    def cannot_sign(key: str) -> str:
        raise StorageUnavailable("S3 presign failed: credentials could not be loaded")

    monkeypatch.setattr(state.storage, "url", cannot_sign)
    job = await only_job(client, caller, batch_id)
    assert job["output"]["url"] == f"http://testserver/v1/jobs/{job['id']}/output"
    answer = await client.get(f"/v1/jobs/{job['id']}/output", headers=caller.headers)
    assert answer.status_code == 503
    assert answer.json()["error"]["code"] == "storage_unavailable"
    assert "credentials" not in answer.text  # the detail is logged, not shown
