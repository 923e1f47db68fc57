"""The Replicate adapter against the provider simulator, over real HTTP."""

from __future__ import annotations

import asyncio
import io
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
from PIL import Image

from service.kit.signing import new_webhook_secret, sign
from service.providers import replicate as replicate_module
from service.providers.account import AccountConfig
from service.providers.base import (
    AsyncProvider,
    CallbackRejected,
    GenerationRequest,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.catalogue import account_config, build_provider
from service.providers.replicate import ReplicateProvider, aspect_ratio, prediction_request
from simulators import SimConfig, SimulatorHandle, run_simulator
from simulators.predictions import PERMANENT_ERRORS, TRANSIENT_ERRORS
from tests.providers.polling import until_finished
from tests.webhooks.receiver import Received, running_receiver

TOKEN_ENV = "DARKROOM_TEST_REPLICATE_TOKEN"
SECRET_ENV = "DARKROOM_TEST_REPLICATE_WHSEC"
MODEL = "black-forest-labs/flux-schnell"

INTERVAL_S = 10.0  # the simulator's rate limit in the 429 tests: one request per this


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with run_simulator(SimConfig(latency={"kind": "fixed", "s": 0.05})) as sim:
        yield sim


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "sim-token")


def account(url: str, **overrides: object) -> AccountConfig:
    values: dict[str, object] = {"kind": "replicate", "base_url": url, "token_env": TOKEN_ENV}
    return account_config(values | overrides)


@pytest.fixture
async def provider(sim: SimulatorHandle) -> AsyncIterator[ReplicateProvider]:
    provider = build_provider("replicate", account(sim.url, timeout_s=5))
    assert isinstance(provider, ReplicateProvider)
    yield provider
    await provider.aclose()


def request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "model_ref": MODEL,
        "width": 512,
        "height": 384,
        "format": "png",
        "seed": 7,
    }
    return GenerationRequest(**(values | overrides))


# --- the happy path -------------------------------------------------------------------


def test_is_an_asynchronous_provider() -> None:
    provider = build_provider("r", account("http://x"))
    assert isinstance(provider, ReplicateProvider)
    assert isinstance(provider, AsyncProvider)
    assert (provider.name, provider.kind) == ("r", "replicate")
    assert provider.capabilities.callbacks
    assert provider.capabilities.cancel


async def test_submit_poll_fetch(provider: ReplicateProvider, sim: SimulatorHandle) -> None:
    remote = await provider.submit(request(width=512, height=384))
    assert remote.status == "pending"
    assert remote.data == {}  # the id is all a poll needs: nothing else is kept with the job
    created = (await provider.poll(remote)).data
    assert created["model"] == MODEL
    assert created["input"] == {
        "prompt": "a lighthouse at dusk",
        "width": 512,
        "height": 384,
        "aspect_ratio": "4:3",
        "seed": 7,
        "output_format": "png",
        "num_outputs": 1,
    }
    done = await until_finished(provider, remote)
    assert done.status == "succeeded"
    assert done.error is None
    assert "logs" not in done.data

    image = await provider.fetch_result(done, request(width=512, height=384))
    decoded = Image.open(io.BytesIO(image.data))
    assert (decoded.format, decoded.size) == ("PNG", (512, 384))
    assert (image.format, image.width, image.height) == ("png", 512, 384)
    assert image.usage["predict_time"] >= 0
    stats = await sim.stats()
    assert stats["creations_accepted"] == 1
    assert stats["duplicate_submissions"] == 0


async def test_jpeg_is_asked_for_as_jpg(provider: ReplicateProvider) -> None:
    job = request(format="jpeg", width=1024, height=576)
    remote = await provider.submit(job)
    created = (await provider.poll(remote)).data
    assert created["input"]["output_format"] == "jpg"
    assert created["input"]["aspect_ratio"] == "16:9"
    image = await provider.fetch_result(await until_finished(provider, remote), job)
    assert Image.open(io.BytesIO(image.data)).format == "JPEG"
    assert image.content_type == "image/jpeg"


async def test_exact_version_uses_the_predictions_endpoint(provider: ReplicateProvider) -> None:
    version = "5599ed30703defd1d160a25a63321b4dec97101d98b4674bcc56e41f62f35637"
    remote = await provider.submit(request(model_ref=f"{MODEL}:{version}"))
    created = (await provider.poll(remote)).data
    assert created["version"] == version
    assert created["model"] != MODEL  # not the model route: the version alone named it
    assert (await until_finished(provider, remote)).status == "succeeded"


def test_prediction_request_shapes() -> None:
    assert prediction_request(request())[0] == f"v1/models/{MODEL}/predictions"
    path, body = prediction_request(request(model_ref="o/n:abc"))
    assert (path, body["version"]) == ("v1/predictions", "abc")
    for bad in ("flux", "o/", "/n", "o/n/x", "o/n:"):
        with pytest.raises(ProviderPermanentError, match="owner/name") as caught:
            prediction_request(request(model_ref=bad))
        assert caught.value.code == "invalid_input"


@pytest.mark.parametrize(
    ("width", "height", "ratio"),
    [
        (1024, 1024, "1:1"),
        (1536, 1024, "3:2"),
        (832, 1040, "4:5"),
        (576, 1024, "9:16"),
        (1344, 768, None),  # 7:4: no flux aspect ratio, width and height only
        (640, 1536, None),
    ],
)
def test_aspect_ratio(width: int, height: int, ratio: str | None) -> None:
    assert aspect_ratio(width, height) == ratio


async def test_missing_token_fails_permanently_naming_the_variable(
    sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    provider = build_provider("replicate", account(sim.url))
    with pytest.raises(ProviderPermanentError, match=TOKEN_ENV) as caught:
        await provider.submit(request())
    assert caught.value.code == "provider_not_configured"
    assert (await sim.stats())["creation_requests"] == 0
    await provider.aclose()


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "hinted"), [("retry_after", True), ("body", True), ("none", False)]
)
async def test_429(
    provider: ReplicateProvider, sim: SimulatorHandle, mode: str, hinted: bool
) -> None:
    # One token per INTERVAL_S: a loaded machine cannot be slow enough to see the next one,
    # and the hint is checked against the time the two requests really took.
    await sim.configure(rate_per_s=1 / INTERVAL_S, burst=1, rate_limit_hint=mode)
    began = time.monotonic()
    await provider.submit(request())
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.submit(request(seed=8))
    error = caught.value
    assert (error.code, error.http_status, error.retryable) == ("rate_limited", 429, True)
    assert error.message.startswith("replicate 429: ")
    if hinted:
        assert error.retry_after_s is not None
        elapsed = time.monotonic() - began
        assert INTERVAL_S - elapsed - 0.01 <= error.retry_after_s <= INTERVAL_S
    else:
        assert error.retry_after_s is None


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        ("error_500", 500, "An unexpected error occurred."),
        ("error_502", 502, "502 Bad Gateway"),
        ("error_503", 503, "The service is temporarily unavailable."),
    ],
)
async def test_5xx_is_retryable(
    provider: ReplicateProvider, sim: SimulatorHandle, fault: str, status: int, text: str
) -> None:
    await sim.configure(**{fault: 1.0})
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.submit(request())
    assert (caught.value.code, caught.value.http_status) == ("server_error", status)
    assert caught.value.message == f"replicate {status}: {text}"


async def test_connection_reset(provider: ReplicateProvider, sim: SimulatorHandle) -> None:
    await sim.configure(reset=1.0)
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.submit(request())
    assert caught.value.code == "connection_error"


async def test_hang_times_out(sim: SimulatorHandle) -> None:
    await sim.configure(hang=1.0)
    provider = ReplicateProvider("replicate", account(sim.url, timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.submit(request())
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 5
    await provider.aclose()


async def test_malformed_json(provider: ReplicateProvider, sim: SimulatorHandle) -> None:
    await sim.configure(malformed_json=1.0)
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.submit(request())
    assert caught.value.code == "malformed_response"


async def test_huge_body_is_refused_without_loading_it(
    provider: ReplicateProvider, sim: SimulatorHandle
) -> None:
    await sim.configure(huge_body=1.0, huge_body_bytes=80 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(ProviderRetryableError) as caught:
            await provider.submit(request())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == "response_too_large"
    assert peak < 20 * 1024 * 1024


async def test_not_an_image(provider: ReplicateProvider, sim: SimulatorHandle) -> None:
    await sim.configure(not_image=1.0)
    remote = await until_finished(provider, await provider.submit(request()))
    assert remote.status == "succeeded"
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.fetch_result(remote, request())
    assert caught.value.code == "invalid_image"


async def test_wrong_token_is_auth(sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "not-the-token")
    provider = ReplicateProvider("replicate", account(sim.url))
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.submit(request())
    assert (caught.value.code, caught.value.http_status) == ("auth", 401)
    assert "valid authentication token" in caught.value.message
    await provider.aclose()


async def test_invalid_input_carries_replicate_detail(provider: ReplicateProvider) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.submit(request(width=9000))
    assert (caught.value.code, caught.value.http_status) == ("invalid_input", 422)
    assert "input.width" in caught.value.message


async def test_content_policy_failure(provider: ReplicateProvider) -> None:
    remote = await until_finished(provider, await provider.submit(request(prompt="a FORBIDDEN")))
    assert remote.status == "failed"
    assert isinstance(remote.error, ProviderPermanentError)
    assert remote.error.code == "content_policy"
    assert "NSFW" in remote.error.message
    with pytest.raises(ProviderPermanentError):
        await provider.fetch_result(remote, request())


def test_failure_classification() -> None:
    """Only an error that says the input can never work is permanent; everything else
    (out of memory, a crash, a timeout, no reason) is worth another attempt."""
    provider = ReplicateProvider("replicate", account("http://x"))

    def failed(error: object) -> RemoteHandle:
        return provider.parse_remote({"id": "p", "status": "failed", "error": error})

    for text in (*TRANSIENT_ERRORS, None, "CUDA error: device-side assert triggered"):
        transient = failed(text).error
        assert isinstance(transient, ProviderRetryableError), text
        assert transient.code == "provider_failed"
        assert "prediction p failed" in transient.message
    assert "no reason given" in (failed(None).error or Exception()).args[0]
    assert "CUDA out of memory" in (failed(TRANSIENT_ERRORS[0]).error or Exception()).args[0]
    codes = {
        text: (failed(text).error or ProviderRetryableError("", "")) for text in PERMANENT_ERRORS
    }
    assert {type(error) for error in codes.values()} == {ProviderPermanentError}
    assert [error.code for error in codes.values()] == [
        "content_policy",
        "content_policy",
        "invalid_input",
    ]
    gone = failed("Model not found: the version does not exist").error
    assert isinstance(gone, ProviderPermanentError)
    assert gone.code == "model_not_found"
    aborted = provider.parse_remote({"id": "p", "status": "aborted"})
    assert aborted.status == "canceled"
    assert isinstance(aborted.error, ProviderRetryableError)
    assert aborted.error.code == "aborted"
    for payload in ({"status": "succeeded"}, {"id": "p", "status": "weird"}, {"id": 3}):
        with pytest.raises(ProviderRetryableError, match="not a prediction"):
            provider.parse_remote(payload)


async def test_output_missing_or_removed(provider: ReplicateProvider) -> None:
    missing = RemoteHandle("p", "succeeded", data={"output": None})
    with pytest.raises(ProviderRetryableError, match="without an output URL"):
        await provider.fetch_result(missing, request())
    removed = RemoteHandle("p", "succeeded", data={"output": None, "data_removed": True})
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.fetch_result(removed, request())
    assert caught.value.code == "output_expired"


async def test_poll_unknown_prediction(provider: ReplicateProvider) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.poll(RemoteHandle("doesnotexist"))
    assert caught.value.http_status == 404


# --- cancel ---------------------------------------------------------------------------


async def test_cancel(provider: ReplicateProvider, sim: SimulatorHandle) -> None:
    await sim.configure(latency={"kind": "fixed", "s": 30})
    remote = await provider.submit(request())
    await provider.cancel(remote)
    canceled = await provider.poll(remote)
    assert canceled.status == "canceled"
    assert isinstance(canceled.error, ProviderPermanentError)
    assert canceled.error.code == "canceled"
    await provider.cancel(remote)  # already finished: not an error
    await provider.cancel(RemoteHandle("doesnotexist"))  # unknown: not an error
    assert (await sim.stats())["predictions_by_status"]["canceled"] == 1


# --- callbacks ------------------------------------------------------------------------


async def received_callback(receiver: Any) -> Received:
    deadline = time.monotonic() + 10
    while not receiver.received:
        assert time.monotonic() < deadline, "no callback arrived"
        await asyncio.sleep(0.02)
    return receiver.received[0]  # type: ignore[no-any-return]


async def test_callback_verifies_and_parses(
    provider: ReplicateProvider, sim: SimulatorHandle
) -> None:
    async with running_receiver() as receiver:
        job = request(callback_url=receiver.url)
        remote = await provider.submit(job)
        callback = await received_callback(receiver)

    parsed = await provider.parse_callback(callback.headers, callback.body)
    assert (parsed.id, parsed.status) == (remote.id, "succeeded")
    image = await provider.fetch_result(parsed, job)
    assert (image.width, image.height) == (512, 384)
    # The secret was fetched once and is reused.
    assert await provider.parse_callback(callback.headers, callback.body) == parsed
    assert (await sim.stats())["requests_by_route"]["GET /v1/webhooks/default/secret"] == 1

    tampered = callback.body.replace(b'"succeeded"', b'"failed"')
    with pytest.raises(CallbackRejected, match="signature"):
        await provider.parse_callback(callback.headers, tampered)

    secret = SimConfig().webhook_secret
    stale = int(time.time()) - 600
    old_headers = callback.headers | {
        "webhook-timestamp": str(stale),
        "webhook-signature": sign(secret, callback.headers["webhook-id"], stale, callback.body),
    }
    with pytest.raises(CallbackRejected, match="old"):
        await provider.parse_callback(old_headers, callback.body)
    without = {k: v for k, v in callback.headers.items() if k != "webhook-signature"}
    with pytest.raises(CallbackRejected, match="missing"):
        await provider.parse_callback(without, callback.body)


async def test_callback_asks_only_for_completed_events(provider: ReplicateProvider) -> None:
    async with running_receiver() as receiver:
        await provider.submit(request(callback_url=receiver.url))
        await received_callback(receiver)
        await asyncio.sleep(0.2)
    assert len(receiver.received) == 1
    assert json.loads(receiver.received[0].body)["status"] == "succeeded"


async def test_callback_secret_from_the_environment(
    sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = ReplicateProvider("replicate", account(sim.url, webhook_secret_env=SECRET_ENV))
    async with running_receiver() as receiver:
        await provider.submit(request(callback_url=receiver.url))
        callback = await received_callback(receiver)
    with pytest.raises(CallbackRejected, match=SECRET_ENV):
        await provider.parse_callback(callback.headers, callback.body)
    monkeypatch.setenv(SECRET_ENV, new_webhook_secret())
    with pytest.raises(CallbackRejected, match="signature"):
        await provider.parse_callback(callback.headers, callback.body)
    monkeypatch.setenv(SECRET_ENV, SimConfig().webhook_secret)
    assert (await provider.parse_callback(callback.headers, callback.body)).status == "succeeded"
    await provider.aclose()


async def test_rotated_secret_is_fetched_again(
    provider: ReplicateProvider, sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(replicate_module, "_SECRET_REFRESH_S", 0.0)
    async with running_receiver() as receiver:
        await provider.submit(request(callback_url=receiver.url))
        first = await received_callback(receiver)
        await provider.parse_callback(first.headers, first.body)
        await sim.configure(webhook_secret=new_webhook_secret())
        receiver.received.clear()
        await provider.submit(request(callback_url=receiver.url, seed=99))
        second = await received_callback(receiver)
    assert (await provider.parse_callback(second.headers, second.body)).status == "succeeded"


async def test_callback_body_that_is_not_a_prediction(provider: ReplicateProvider) -> None:
    secret = SimConfig().webhook_secret
    body = b'{"hello": "world"}'
    now = int(time.time())
    headers = {
        "webhook-id": "msg_x",
        "webhook-timestamp": str(now),
        "webhook-signature": sign(secret, "msg_x", now, body),
    }
    with pytest.raises(CallbackRejected, match="not a prediction"):
        await provider.parse_callback(headers, body)
