"""The provider simulator, over a real port: protocols, limits, faults and counters.

One simulator serves the module (started once); each test gets it with the default
configuration and empty counters.
"""

from __future__ import annotations

import asyncio
import base64
import io
import json
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from PIL import Image, UnidentifiedImageError
from standardwebhooks.webhooks import Webhook

from simulators import (
    SimConfig,
    SimulatorHandle,
    run_simulator,
    running_simulator,
    start_simulator_process,
)
from simulators.config import DEFAULT_WEBHOOK_SECRET

AUTH = {"Authorization": "Bearer sim-token"}
FLUX = "/v1/models/black-forest-labs/flux-schnell/predictions"
IMAGES = "/v1/images/generations"


@pytest.fixture(scope="module")
def server_url() -> Iterator[str]:
    with running_simulator() as handle:
        yield handle.url


@pytest.fixture
async def sim(server_url: str) -> SimulatorHandle:
    handle = SimulatorHandle(server_url)
    await handle.configure(**SimConfig().model_dump())
    await handle.reset()
    return handle


@pytest.fixture
async def client(sim: SimulatorHandle) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sim.url, headers=AUTH, timeout=5) as client:
        yield client


def flux(prompt: str = "a lighthouse at dusk", **extra: Any) -> dict[str, Any]:
    return {"input": {"prompt": prompt, **extra}}


def gpt(prompt: str = "a lighthouse at dusk", **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-image-1", "prompt": prompt, **extra}


async def wait_for_status(client: httpx.AsyncClient, prediction_id: str) -> dict[str, Any]:
    for _ in range(200):
        prediction: dict[str, Any] = (await client.get(f"/v1/predictions/{prediction_id}")).json()
        if prediction["status"] not in ("starting", "processing"):
            return prediction
        await asyncio.sleep(0.02)
    raise AssertionError("prediction never finished")


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return image.size


# -- Replicate ------------------------------------------------------------------------


async def test_replicate_prediction_runs_to_a_real_image(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    await sim.configure(latency={"kind": "fixed", "s": 0.3})
    created = await client.post(FLUX, json=flux(width=640, height=480, output_format="png"))
    assert created.status_code == 201
    prediction = created.json()
    assert prediction["status"] == "starting"
    assert prediction["model"] == "black-forest-labs/flux-schnell"
    assert prediction["output"] is None
    assert prediction["urls"]["get"] == f"{sim.url}/v1/predictions/{prediction['id']}"

    done = await wait_for_status(client, prediction["id"])
    assert done["status"] == "succeeded"
    assert done["completed_at"]
    assert done["started_at"]
    assert done["metrics"]["predict_time"] > 0
    (url,) = done["output"]
    assert url == f"{sim.url}/files/{prediction['id']}.png"
    file = await client.get(url)
    assert file.headers["content-type"] == "image/png"
    assert file.content.startswith(b"\x89PNG")
    assert image_size(file.content) == (640, 480)


async def test_replicate_version_route_aspect_ratio_and_default_format(
    client: httpx.AsyncClient,
) -> None:
    body = {"version": "acme/painter:abc123", **flux(aspect_ratio="16:9")}
    created = await client.post("/v1/predictions", json=body, headers={"Prefer": "wait=5"})
    prediction = created.json()
    assert (prediction["model"], prediction["version"]) == ("acme/painter", "abc123")
    assert prediction["status"] == "succeeded"  # Prefer: wait held the response until done
    file = await client.get(prediction["output"][0])
    assert prediction["output"][0].endswith(".webp")
    assert file.headers["content-type"] == "image/webp"
    assert image_size(file.content) == (1344, 768)  # FLUX's size for 16:9


async def test_replicate_errors_are_problem_json(client: httpx.AsyncClient) -> None:
    unauthorised = await client.post(FLUX, json=flux(), headers={"Authorization": "Bearer no"})
    assert unauthorised.status_code == 401
    assert unauthorised.headers["content-type"] == "application/problem+json"
    assert unauthorised.json()["status"] == 401
    assert unauthorised.json()["title"]
    async with httpx.AsyncClient(base_url=str(client.base_url)) as anonymous_client:
        anonymous = await anonymous_client.get("/v1/predictions/x")
    assert anonymous.status_code == 401
    missing = await client.get("/v1/predictions/doesnotexist")
    assert missing.status_code == 404
    assert missing.json()["status"] == 404
    invalid = await client.post(FLUX, json=flux(output_format="gif"))
    assert invalid.status_code == 422
    assert invalid.json()["invalid_fields"][0]["field"] == "input.output_format"


async def test_content_policy_fails_the_prediction(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    created = await client.post(FLUX, json=flux("a FORBIDDEN scene"))
    assert created.status_code == 201
    done = await wait_for_status(client, created.json()["id"])
    assert done["status"] == "failed"
    assert done["output"] is None
    assert "NSFW" in done["error"]
    assert (await sim.stats())["predictions_by_status"]["failed"] == 1


async def test_cancel_stops_a_running_prediction(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    await sim.configure(latency={"kind": "fixed", "s": 30})
    prediction = (await client.post(FLUX, json=flux())).json()
    canceled = await client.post(f"/v1/predictions/{prediction['id']}/cancel")
    assert canceled.status_code == 200
    assert canceled.json()["status"] == "canceled"
    stats = await sim.stats()
    assert stats["cancels"] == 1
    assert stats["concurrency_current"]["replicate"] == 0
    assert stats["predictions_by_status"]["canceled"] == 1


# -- webhooks -------------------------------------------------------------------------


@dataclass
class Receiver:
    """A bare HTTP server that records webhook deliveries and answers from a script."""

    statuses: list[int] = field(default_factory=list)
    received: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    url: str = ""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        headers = {k.lower(): v.strip() for k, _, v in (x.partition(":") for x in lines if x)}
        body = await reader.readexactly(int(headers.get("content-length", 0)))
        status = self.statuses.pop(0) if self.statuses else 200
        self.received.append((headers, body))
        if status == 200:
            self.arrived.set()
        reply = f"HTTP/1.1 {status} X\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
        writer.write(reply.encode())
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    receiver = Receiver()
    server = await asyncio.start_server(receiver.handle, "127.0.0.1", 0)
    receiver.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/hook"
    async with server:
        yield receiver


async def test_webhook_is_signed_per_standard_webhooks_and_retried(
    sim: SimulatorHandle, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await sim.configure(webhook_backoff_s=0.01)
    receiver.statuses = [500]  # the first attempt fails, the retry succeeds
    secret = (await client.get("/v1/webhooks/default/secret")).json()["key"]
    assert secret == DEFAULT_WEBHOOK_SECRET
    assert secret.startswith("whsec_")
    body = {**flux(), "webhook": receiver.url, "webhook_events_filter": ["completed"]}
    prediction = (await client.post(FLUX, json=body)).json()

    await asyncio.wait_for(receiver.arrived.wait(), 5)
    assert len(receiver.received) == 2
    (first_headers, _), (headers, payload) = receiver.received
    assert headers["webhook-id"].startswith("msg_")
    assert headers["webhook-id"] == first_headers["webhook-id"]  # one message, retried
    assert headers["webhook-signature"].startswith("v1,")
    delivered = Webhook(secret).verify(payload, headers)
    assert delivered["id"] == prediction["id"]
    assert delivered["status"] == "succeeded"
    for _ in range(50):  # the sender counts once it has read the receiver's answer
        stats = await sim.stats()
        if stats["webhooks_sent"]:
            break
        await asyncio.sleep(0.02)
    counts = (stats["webhooks_sent"], stats["webhook_attempts"], stats["webhooks_failed"])
    assert counts == (1, 2, 0)


# -- OpenAI ---------------------------------------------------------------------------


async def test_openai_returns_a_decodable_image_and_usage(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    response = await client.post(IMAGES, json=gpt(size="1536x1024", quality="low", n=2))
    assert response.status_code == 200
    body = response.json()
    assert len(body["data"]) == 2
    assert body["size"] == "1536x1024"
    assert image_size(base64.b64decode(body["data"][0]["b64_json"])) == (1536, 1024)
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert usage["input_tokens_details"]["text_tokens"] == usage["input_tokens"]
    assert sum((await sim.stats())["completions_per_second"]) == 1  # in whichever second


async def test_openai_errors(client: httpx.AsyncClient) -> None:
    wrong = await client.post(IMAGES, json=gpt(), headers={"Authorization": "Bearer sk-nope"})
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "invalid_api_key"
    policy = await client.post(IMAGES, json=gpt("FORBIDDEN things"))
    assert policy.status_code == 400
    assert policy.json()["error"]["code"] == "content_policy_violation"
    assert policy.json()["error"]["type"] == "image_generation_user_error"
    size = await client.post(IMAGES, json=gpt(size="800x600"))
    assert size.status_code == 400
    assert size.json()["error"]["param"] == "size"


# -- limits ---------------------------------------------------------------------------


async def burst(client: httpx.AsyncClient, path: str, body: dict[str, Any], n: int) -> list[Any]:
    return await asyncio.gather(*(client.post(path, json=body) for _ in range(n)))


# A token every SLOW_S seconds: however slowly a loaded machine sends a burst, no token comes
# back in the middle of it, so the counts below do not depend on the machine's speed.
SLOW_S = 100.0


async def test_gcra_admits_one_of_a_burst(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    await sim.configure(rate_per_s=1 / SLOW_S, burst=1)
    statuses = sorted(r.status_code for r in await burst(client, FLUX, flux(), 5))
    assert statuses == [201, 429, 429, 429, 429]
    await sim.configure(burst=3)  # OpenAI's limiter is its own, and still full
    statuses = sorted(r.status_code for r in await burst(client, IMAGES, gpt(), 5))
    assert statuses == [200, 200, 200, 429, 429]
    stats = await sim.stats()
    assert stats["rate_limited"] == 6
    assert stats["rate_limited_by_cause"]["rate"] == 6
    assert sum(stats["rate_limited_per_second"]) == 6
    assert sum(stats["creates_per_second"]) == stats["creations_accepted"] == 4


async def test_rate_limit_hint_modes(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    """A hint is the wait until the next token: SLOW_S less the time since the first request,
    rounded up. How long the requests took is measured, not assumed."""
    await sim.configure(rate_per_s=1 / SLOW_S)
    began = time.monotonic()
    await client.post(FLUX, json=flux())
    await client.post(IMAGES, json=gpt())

    def hint_range() -> range:
        elapsed = time.monotonic() - began
        return range(math.floor(SLOW_S - elapsed), int(SLOW_S) + 1)

    replicate = (await client.post(FLUX, json=flux())).headers
    openai = (await client.post(IMAGES, json=gpt())).headers
    hints = hint_range()
    assert int(replicate["retry-after"]) in hints
    assert int(openai["retry-after"]) in hints
    assert hints.start * 1000 <= int(openai["retry-after-ms"]) <= SLOW_S * 1000

    await sim.configure(rate_limit_hint="body")
    replicate_body = await client.post(FLUX, json=flux())
    openai_body = await client.post(IMAGES, json=gpt())
    hints = hint_range()
    assert "retry-after" not in replicate_body.headers
    assert "retry-after" not in openai_body.headers
    seconds = replicate_body.json()["retry_after"]
    assert seconds in hints
    assert f"Expected available in {seconds} seconds." in replicate_body.json()["detail"]
    assert openai_body.json()["error"]["code"] == "rate_limit_exceeded"
    assert "Please try again in 1m" in openai_body.json()["error"]["message"]  # 1m40s or less

    await sim.configure(rate_limit_hint="none")
    for response in (await client.post(FLUX, json=flux()), await client.post(IMAGES, json=gpt())):
        assert response.status_code == 429
        assert not {"retry-after", "retry-after-ms"} & set(response.headers)
        assert "retry_after" not in response.text
        assert "try again in" not in response.text


async def test_concurrency_limit(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    # Generations outlast the test: only a cancel frees a slot, whatever the machine's speed.
    await sim.configure(max_concurrent=2, latency={"kind": "fixed", "s": SLOW_S})
    created = [await client.post(FLUX, json=flux(str(i))) for i in range(3)]
    assert [r.status_code for r in created] == [201, 201, 429]
    cancel = await client.post(f"/v1/predictions/{created[0].json()['id']}/cancel")
    assert cancel.status_code == 200
    assert (await client.post(FLUX, json=flux("later"))).status_code == 201

    # A synchronous API holds its slot for the whole request: long enough for the burst's
    # other two requests to arrive while it is held, short enough to wait for.
    await sim.configure(max_concurrent=1, latency={"kind": "fixed", "s": 3})
    statuses = sorted(r.status_code for r in await burst(client, IMAGES, gpt(), 3))
    assert statuses == [200, 429, 429]
    stats = await sim.stats()
    assert stats["concurrency_peak"] == {"replicate": 2, "openai": 1}
    assert stats["rate_limited_by_cause"] == {"rate": 0, "concurrency": 3}


async def test_rate_can_change_mid_run(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    statuses = [(await client.post(FLUX, json=flux())).status_code for _ in range(3)]
    assert statuses == [201] * 3
    config = await sim.configure(rate_per_s=1 / SLOW_S)
    assert config.rate_per_s == 1 / SLOW_S
    assert config.burst == 1
    statuses = [(await client.post(FLUX, json=flux())).status_code for _ in range(3)]
    assert statuses == [201, 429, 429]
    await sim.configure(rate_per_s=None)
    assert (await client.post(FLUX, json=flux())).status_code == 201
    bad = await client.patch("/_sim/config", json={"burst": 0})
    assert bad.status_code == 422
    assert (await sim.config()).burst == 1


# -- faults ---------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "status"), [("error_500", 500), ("error_503", 503)])
async def test_server_errors(
    sim: SimulatorHandle, client: httpx.AsyncClient, kind: str, status: int
) -> None:
    await sim.configure(**{kind: 1.0})
    replicate = await client.post(FLUX, json=flux())
    assert replicate.status_code == status
    assert replicate.json()["status"] == status
    openai = await client.post(IMAGES, json=gpt())
    assert openai.status_code == status
    assert openai.json()["error"]["type"] == "server_error"
    stats = await sim.stats()
    assert stats["faults"][kind] == 2
    assert stats["creations_accepted"] == 0


async def test_bad_gateway_is_html(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    await sim.configure(error_502=1.0)
    response = await client.post(IMAGES, json=gpt())
    assert response.status_code == 502
    assert response.headers["content-type"].startswith("text/html")


async def test_reset_drops_the_connection(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    await sim.configure(reset=1.0)
    for path, body in ((FLUX, flux()), (IMAGES, gpt())):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            await client.post(path, json=body)
    stats = await sim.stats()
    assert stats["faults"]["reset"] == 2
    assert stats["status_codes"] == {}
    assert stats["predictions"] == 1  # created, though its response was lost


async def test_hang_outlasts_the_client_timeout(
    sim: SimulatorHandle, client: httpx.AsyncClient
) -> None:
    await sim.configure(hang=1.0)
    for path, body in ((FLUX, flux()), (IMAGES, gpt())):
        with pytest.raises(httpx.ReadTimeout):
            await client.post(path, json=body, timeout=0.3)
    # The server notices the client's disconnect on its own schedule: wait for it to.
    for _ in range(250):
        if (await sim.stats())["concurrency_current"]["openai"] == 0:
            break
        await asyncio.sleep(0.02)
    assert (await sim.stats())["concurrency_current"]["openai"] == 0  # gave up with the client


async def test_malformed_json(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    await sim.configure(malformed_json=1.0)
    for path, body, status in ((FLUX, flux(), 201), (IMAGES, gpt(), 200)):
        response = await client.post(path, json=body)
        assert response.status_code == status
        with pytest.raises(json.JSONDecodeError):
            response.json()


async def test_not_image(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    await sim.configure(not_image=1.0)
    openai = (await client.post(IMAGES, json=gpt())).json()
    with pytest.raises(UnidentifiedImageError):
        image_size(base64.b64decode(openai["data"][0]["b64_json"]))
    created = await client.post(FLUX, json=flux(output_format="png"))
    done = await wait_for_status(client, created.json()["id"])
    file = await client.get(done["output"][0])
    assert file.status_code == 200
    assert file.headers["content-type"] == "image/png"
    with pytest.raises(UnidentifiedImageError):
        image_size(file.content)


async def test_huge_body_is_streamed(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    size = 3 * 1024 * 1024
    await sim.configure(huge_body=1.0, huge_body_bytes=size)
    for path, body in ((FLUX, flux()), (IMAGES, gpt())):
        async with client.stream("POST", path, json=body) as response:
            assert response.is_success
            assert int(response.headers["content-length"]) == size
            received = sum([len(chunk) async for chunk in response.aiter_bytes()])
        assert received == size


# -- counting -------------------------------------------------------------------------


async def test_duplicate_submissions(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    for prompt in ("one", "two", "one"):
        await client.post(FLUX, json=flux(prompt))
    await client.post("/v1/models/other/model/predictions", json=flux("one"))
    for _ in range(2):
        await client.post(IMAGES, json=gpt("one"))
    assert (await sim.stats())["duplicate_submissions"] == 2


async def test_stats_fields_and_reset(sim: SimulatorHandle, client: httpx.AsyncClient) -> None:
    await client.post(FLUX, json=flux(), headers={"Authorization": "Bearer wrong"})
    created = (await client.post(FLUX, json=flux())).json()
    await wait_for_status(client, created["id"])
    stats = await sim.stats()
    assert set(stats) == {
        "since_reset_s", "requests_total", "requests_by_route", "status_codes",
        "creation_requests", "creations_accepted", "creations_by_provider",
        "creates_per_second", "rate_limited", "rate_limited_by_cause",
        "rate_limited_per_second", "concurrency_current", "concurrency_peak",
        "duplicate_submissions", "predictions", "predictions_by_status", "cancels",
        "completions_per_second", "webhooks_sent", "webhooks_failed", "webhook_attempts",
        "faults",
    }  # fmt: skip
    assert stats["creation_requests"] == 2
    assert stats["creations_accepted"] == 1
    assert stats["status_codes"]["401"] == 1
    assert stats["status_codes"]["201"] == 1
    route = "POST /v1/models/{owner}/{name}/predictions"
    assert stats["requests_by_route"][route] == 2
    assert stats["requests_total"] == sum(stats["requests_by_route"].values())
    assert stats["predictions_by_status"]["succeeded"] == 1
    assert sum(stats["completions_per_second"]) == 1

    await sim.reset()
    stats = await sim.stats()
    assert stats["requests_total"] == 0
    assert stats["predictions"] == 0
    assert stats["creates_per_second"] == []


# -- runners --------------------------------------------------------------------------


async def test_run_simulator_starts_and_stops_its_own_server() -> None:
    async with run_simulator(SimConfig(token="other"), port=0) as sim:
        assert (await sim.config()).token == "other"
        async with httpx.AsyncClient(base_url=sim.url) as client:
            headers = {"Authorization": "Bearer other"}
            assert (await client.post(FLUX, json=flux(), headers=headers)).status_code == 201
        assert (await sim.stats())["creations_accepted"] == 1
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{sim.url}/_sim/config")


def test_simulator_in_its_own_process() -> None:
    url, process = start_simulator_process(SimConfig(rate_per_s=7.0))
    try:
        assert httpx.get(f"{url}/_sim/config").json()["rate_per_s"] == 7.0
    finally:
        process.terminate()
        process.wait(10)
