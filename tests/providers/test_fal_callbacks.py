"""fal's webhooks, as the fal simulator sends them: verified with ED25519 and the JWKS,
forged and stale ones rejected, the key set cached and refetched on rotation."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import pytest

from service.providers.base import (
    CallbackRejected,
    GenerationRequest,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.fal import FalProvider
from simulators.fal import FalHandle
from tests.providers.fal_fixtures import fal_server, key, provider, sim
from tests.webhooks.receiver import Received, Receiver, running_receiver

__all__ = ["fal_server", "key", "provider", "sim"]  # fixtures

MODEL = "fal-ai/flux/dev"


def request(callback_url: str, **overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "model_ref": MODEL,
        "width": 64,
        "height": 48,
        "format": "png",
        "seed": 3,
        "callback_url": callback_url,
    }
    return GenerationRequest(**(values | overrides))


async def delivered(receiver: Receiver, count: int = 1) -> Received:
    deadline = time.monotonic() + 10
    while len(receiver.received) < count:
        assert time.monotonic() < deadline, "no webhook arrived"
        await asyncio.sleep(0.02)
    return receiver.received[count - 1]


async def webhook_for(
    provider: FalProvider, receiver: Receiver, count: int = 1, **overrides: Any
) -> tuple[RemoteHandle, Received]:
    submitted = await provider.submit(request(receiver.url, **overrides))
    received = await delivered(receiver, count)
    assert json.loads(received.body)["request_id"] == submitted.id
    return submitted, received


async def test_submit_asks_for_the_webhook(provider: FalProvider, sim: FalHandle) -> None:
    async with running_receiver() as receiver:
        await webhook_for(provider, receiver)
    [state] = await sim.call("GET", "/_sim/state")
    assert state["webhook"] == receiver.url


async def test_a_signed_webhook_finishes_the_request(provider: FalProvider, sim: FalHandle) -> None:
    async with running_receiver() as receiver:
        submitted, received = await webhook_for(provider, receiver)
    handle = await provider.parse_callback(received.headers, received.body)
    assert (handle.id, handle.status) == (submitted.id, "succeeded")
    reads = (await sim.stats()).get("result_reads", 0)
    output = await provider.fetch_result(handle, request(receiver.url))
    assert (output.format, output.width, output.height) == ("png", 64, 48)
    assert (await sim.stats()).get("result_reads", 0) == reads  # the payload was enough


async def test_an_error_webhook_carries_fals_message(provider: FalProvider) -> None:
    async with running_receiver() as receiver:
        _, received = await webhook_for(provider, receiver, prompt="")
    handle = await provider.parse_callback(received.headers, received.body)
    assert handle.status == "failed"
    assert isinstance(handle.error, ProviderPermanentError)
    assert handle.error.http_status == 422
    assert "field required" in handle.error.message


@pytest.mark.parametrize("mode", ["forged", "stale", "tampered", "unsigned"])
async def test_forged_and_stale_webhooks_are_rejected(
    provider: FalProvider, sim: FalHandle, mode: str
) -> None:
    await sim.configure(webhook_signature=mode, webhook_retries=0)
    async with running_receiver() as receiver:
        _, received = await webhook_for(provider, receiver)
    with pytest.raises(CallbackRejected):
        await provider.parse_callback(received.headers, received.body)


async def test_keys_are_cached_and_forgeries_do_not_refetch_them(
    provider: FalProvider, sim: FalHandle
) -> None:
    async with running_receiver() as receiver:
        for count in (1, 2):
            _, received = await webhook_for(provider, receiver, count)
            assert (await provider.parse_callback(received.headers, received.body)).finished
        assert provider.verifier.fetches == 1
        await sim.configure(webhook_signature="forged", webhook_retries=0)
        _, forged = await webhook_for(provider, receiver, 3)
    with pytest.raises(CallbackRejected):
        await provider.parse_callback(forged.headers, forged.body)
    assert provider.verifier.fetches == 1  # fetched moments ago: not again
    assert (await sim.stats())["jwks_fetches"] == 1


async def test_a_rotated_key_is_fetched_once(provider: FalProvider, sim: FalHandle) -> None:
    provider.verifier.refresh_min_s = 0  # the rotation comes right after the first fetch
    async with running_receiver() as receiver:
        _, first = await webhook_for(provider, receiver)
        await provider.parse_callback(first.headers, first.body)
        await sim.rotate_key(retire_old=True)
        _, second = await webhook_for(provider, receiver, 2)
    handle = await provider.parse_callback(second.headers, second.body)
    assert handle.status == "succeeded"
    assert provider.verifier.fetches == 2
    # A signature no published key makes is still refused, after one more look.
    await sim.configure(webhook_signature="forged", webhook_retries=0)
    async with running_receiver() as receiver:
        _, forged = await webhook_for(provider, receiver)
    with pytest.raises(CallbackRejected):
        await provider.parse_callback(forged.headers, forged.body)
    assert provider.verifier.fetches == 3


async def test_unreachable_keys_are_retryable_not_rejected(
    provider: FalProvider, sim: FalHandle
) -> None:
    async with running_receiver() as receiver:
        _, received = await webhook_for(provider, receiver)
    await sim.fault(method="GET", path="jwks", status=503, body={"detail": "down"})
    with pytest.raises(ProviderRetryableError):
        await provider.parse_callback(received.headers, received.body)
    assert (await provider.parse_callback(received.headers, received.body)).finished


def signed(sim: FalHandle, header_id: str, body: dict[str, Any]) -> tuple[dict[str, str], bytes]:
    raw = json.dumps(body).encode()
    return sim.sim.queue.keys.headers(header_id, "sim-user", raw), raw


async def test_body_must_name_the_signed_request(provider: FalProvider, sim: FalHandle) -> None:
    headers, body = signed(sim, "req-a", {"request_id": "req-b", "status": "OK", "payload": {}})
    with pytest.raises(CallbackRejected, match="differs"):
        await provider.parse_callback(headers, body)
    headers, body = signed(sim, "req-a", {"request_id": "req-a", "status": "MAYBE"})
    with pytest.raises(CallbackRejected, match="unknown status"):
        await provider.parse_callback(headers, body)


async def test_a_webhook_without_its_payload_reads_the_result(
    provider: FalProvider, sim: FalHandle
) -> None:
    async with running_receiver() as receiver:
        submitted, _ = await webhook_for(provider, receiver)
    message = {"request_id": submitted.id, "status": "OK", "payload": None, "payload_error": "big"}
    headers, body = signed(sim, submitted.id, message)
    handle = await provider.parse_callback(headers, body)
    assert handle.status == "succeeded"
    output = await provider.fetch_result(handle, request(receiver.url))
    assert (output.width, output.height) == (64, 48)


async def test_malformed_headers_are_rejected(provider: FalProvider, sim: FalHandle) -> None:
    headers, body = signed(sim, "req-a", {"request_id": "req-a", "status": "OK", "payload": {}})
    for name, value in (
        ("x-fal-webhook-timestamp", "\uff11\uff12\uff13"),  # fullwidth digits
        ("x-fal-webhook-signature", "not-hex"),
        ("x-fal-webhook-user-id", ""),
    ):
        with pytest.raises(CallbackRejected):
            await provider.parse_callback(headers | {name: value}, body)
