"""The fal simulator speaks fal's queue protocol: what the provider tests rely on."""

from __future__ import annotations

import asyncio
import base64
import io

import av
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from simulators.fal import FalHandle
from simulators.fal_webhooks import SigningKeys, signed_message
from tests.providers.fal_fixtures import fal_server

__all__ = ["fal_server"]  # fixtures

KEY = {"Authorization": "Key sim-fal-key"}


@pytest.fixture
async def sim(fal_server: FalHandle) -> FalHandle:
    await fal_server.call("POST", "/_sim/reset")
    await fal_server.configure(concurrency=1, run_s=0.01, hold=False)
    return fal_server


async def finished(client: httpx.AsyncClient, status_url: str) -> dict[str, object]:
    for _ in range(500):
        body: dict[str, object] = (await client.get(status_url)).json()
        if body["status"] == "COMPLETED":
            return body
        await asyncio.sleep(0.02)
    raise AssertionError("never completed")


async def test_requests_are_read_back_by_app_id_only(sim: FalHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.url, headers=KEY) as client:
        queued = (await client.post("/fal-ai/flux/dev", json={"prompt": "x"})).json()
        assert queued["status"] == "IN_QUEUE"
        assert (
            queued["status_url"] == f"{sim.url}/fal-ai/flux/requests/{queued['request_id']}/status"
        )
        sub_path = await client.get(f"/fal-ai/flux/dev/requests/{queued['request_id']}/status")
        assert sub_path.status_code == 404
        await finished(client, queued["status_url"])
        assert (await client.get(queued["response_url"])).status_code == 200


async def test_auth_is_fals_key_scheme(sim: FalHandle) -> None:
    async with httpx.AsyncClient(base_url=sim.url) as client:
        missing = await client.post("/fal-ai/flux/dev", json={"prompt": "x"})
        bearer = await client.post(
            "/fal-ai/flux/dev",
            json={"prompt": "x"},
            headers={"Authorization": "Bearer sim-fal-key"},
        )
    assert (missing.status_code, bearer.status_code) == (401, 401)
    assert "Authentication is required" in missing.json()["detail"]


async def test_cancel_answers_as_fal_does(sim: FalHandle) -> None:
    await sim.configure(hold=True)
    try:
        async with httpx.AsyncClient(base_url=sim.url, headers=KEY) as client:
            running = (await client.post("/fal-ai/flux/dev", json={"prompt": "a"})).json()
            queued = (await client.post("/fal-ai/flux/dev", json={"prompt": "b"})).json()
            assert (await client.get(queued["status_url"])).json()["queue_position"] == 0
            in_progress = await client.get(running["response_url"])
            assert in_progress.status_code == 400
            first = await client.put(queued["cancel_url"])
            late = await client.put(running["cancel_url"])
    finally:
        await sim.configure(hold=False)
    assert (first.status_code, first.json()) == (202, {"status": "CANCELLATION_REQUESTED"})
    assert (late.status_code, late.json()) == (400, {"status": "ALREADY_COMPLETED"})


async def test_video_endpoints_serve_a_real_mp4(sim: FalHandle) -> None:
    arguments = {
        "prompt": "x",
        "resolution": "64p",
        "aspect_ratio": "1:1",
        "duration": "2",
        "fps": 6,
    }
    async with httpx.AsyncClient(base_url=sim.url, headers=KEY) as client:
        queued = (
            await client.post("/fal-ai/kling-video/v2/master/text-to-video", json=arguments)
        ).json()
        await finished(client, queued["status_url"])
        result = (await client.get(queued["response_url"])).json()
        video = await client.get(result["video"]["url"])
    assert video.headers["content-type"] == "video/mp4"
    with av.open(io.BytesIO(video.content), mode="r") as container:
        stream = container.streams.video[0]
        frames = len(list(container.decode(stream)))
        assert (stream.codec_context.name, stream.width, stream.height) == ("h264", 64, 64)
    assert frames == 12


def test_signatures_verify_with_the_published_key() -> None:
    keys = SigningKeys()
    headers = keys.headers("req", "user", b"{}")
    message = signed_message("req", "user", headers["x-fal-webhook-timestamp"], b"{}")
    jwk = keys.jwks()["keys"][0]
    raw = base64.urlsafe_b64decode(jwk["x"] + "=")
    Ed25519PublicKey.from_public_bytes(raw).verify(
        bytes.fromhex(headers["x-fal-webhook-signature"]), message
    )
    assert (jwk["kty"], jwk["crv"]) == ("OKP", "Ed25519")
