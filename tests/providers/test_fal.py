"""The fal adapter against the fal simulator (simulators.fal), over real HTTP."""

from __future__ import annotations

import base64
import io
from typing import Any

import pytest
from PIL import Image

from service.providers.base import (
    GenerationRequest,
    InputImage,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)
from service.providers.catalogue import build_provider
from service.providers.config import parse_config
from service.providers.fal import KIND, FalConfig, FalProvider, app_id, fal_arguments
from service.providers.http import may_have_reached_provider
from service.providers.kinds import ProviderDeps
from simulators.fal import FalHandle
from tests.providers.fal_fixtures import KEY_ENV, config, fal_server, key, provider, sim
from tests.providers.polling import until_finished

__all__ = ["fal_server", "key", "provider", "sim"]  # fixtures

MODEL = "fal-ai/flux/dev"


def request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a lighthouse at dusk",
        "model_ref": MODEL,
        "width": 96,
        "height": 64,
        "format": "png",
        "seed": 7,
    }
    return GenerationRequest(**(values | overrides))


def png(width: int = 8, height: int = 8) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (10, 200, 30)).save(buffer, "PNG")
    return buffer.getvalue()


async def sim_arguments(sim: FalHandle) -> list[dict[str, Any]]:
    return [entry["arguments"] for entry in await sim.call("GET", "/_sim/state")]


# --- configuration and request shape --------------------------------------------------


def test_config_defaults_and_contract_keys() -> None:
    parsed = FalConfig.model_validate({"kind": "fal", "limits": {"rate_per_s": 10}})
    assert parsed.base_url == "https://queue.fal.run"
    assert parsed.webhook_jwks_url == "https://rest.alpha.fal.ai/.well-known/jwks.json"
    assert parsed.limits.max_concurrent is None  # fal queues: no concurrency limit unless set
    with pytest.raises(ValueError, match="extra"):
        FalConfig.model_validate({"kind": "fal", "webhook_secret_env": "X"})
    provider = KIND.build("f", parsed, ProviderDeps())
    assert isinstance(provider, FalProvider)
    assert provider.capabilities.callbacks
    assert provider.capabilities.cancel
    assert provider.capabilities.media == {"image", "video"}


def test_the_issues_config_block_loads_as_written() -> None:
    text = """
providers:
  fal:      {kind: fal, base_url: https://queue.fal.run, token_env: FAL_KEY,
             webhook_jwks_url: https://rest.alpha.fal.ai/.well-known/jwks.json, limits: {rate_per_s: 10}}
models:
  flux-dev-fal: {provider: fal, ref: fal-ai/flux/dev, price: {per_image: 0.025}}
"""  # noqa: E501 - the block as the issue writes it
    parsed = parse_config(text, source="issue")
    account = parsed.providers["fal"]
    assert isinstance(account, FalConfig)
    assert (account.token_env, account.limits.rate_per_s) == ("FAL_KEY", 10)
    provider = build_provider("fal", account)
    assert isinstance(provider, FalProvider)


def test_app_id_drops_the_sub_path() -> None:
    assert app_id("fal-ai/flux/dev") == "fal-ai/flux"
    assert app_id("fal-ai/flux-pro/v1.1-ultra") == "fal-ai/flux-pro"
    assert app_id("fal-ai/fast-sdxl") == "fal-ai/fast-sdxl"
    assert app_id("workflows/acme/my-flow/run") == "workflows/acme/my-flow"


def test_arguments_for_images_videos_and_inputs() -> None:
    reference = InputImage("reference", png(), "image/png")
    mask = InputImage("mask", png(), "image/png")
    image = fal_arguments(
        request(format="webp", inputs=(reference, mask), options={"guidance_scale": 3})
    )
    assert image["image_size"] == {"width": 96, "height": 64}
    assert image["output_format"] == "png"  # fal makes png or jpeg; webp is converted here
    assert image["image_url"] == reference.data_uri()
    assert image["mask_url"] == mask.data_uri()
    assert image["guidance_scale"] == 3
    two = fal_arguments(request(inputs=(reference, reference)))
    assert two["image_urls"] == [reference.data_uri()] * 2
    assert "image_url" not in two
    video = fal_arguments(
        request(media="video", format="mp4", width=1280, height=720, duration_s=5, fps=24)
    )
    assert (video["duration"], video["resolution"], video["aspect_ratio"]) == ("5", "720p", "16:9")
    assert video["fps"] == 24
    portrait = fal_arguments(request(media="video", format="mp4", width=720, height=1280))
    assert (portrait["resolution"], portrait["aspect_ratio"]) == ("720p", "9:16")
    assert "image_size" not in video


# --- the happy path -------------------------------------------------------------------


async def test_submit_poll_fetch(provider: FalProvider, sim: FalHandle) -> None:
    handle = await provider.submit(request())
    assert handle.status == "pending"
    assert handle.data == {"model": MODEL, "app": "fal-ai/flux"}
    done = await until_finished(provider, handle)
    assert done.status == "succeeded", done.error
    assert done.data["result"]["images"][0]["width"] == 96

    output = await provider.fetch_result(done, request())
    decoded = Image.open(io.BytesIO(output.data))
    assert (decoded.format, decoded.size) == ("PNG", (96, 64))
    assert (output.format, output.media, output.width, output.height) == ("png", "image", 96, 64)
    assert output.usage["seed"] == 7
    assert "inference_time" in output.usage
    [arguments] = await sim_arguments(sim)
    assert arguments["prompt"] == "a lighthouse at dusk"
    assert arguments["seed"] == 7


async def test_webp_is_converted_from_fal_png(provider: FalProvider) -> None:
    done = await until_finished(provider, await provider.submit(request(format="webp")))
    output = await provider.fetch_result(done, request(format="webp"))
    assert Image.open(io.BytesIO(output.data)).format == "WEBP"


async def test_queue_position_moves(provider: FalProvider, sim: FalHandle) -> None:
    await sim.configure(concurrency=1, hold=True)
    handles = [await provider.submit(request(seed=seed)) for seed in range(3)]
    polled = [await provider.poll(handle) for handle in handles]
    assert [h.status for h in polled] == ["pending"] * 3
    assert [h.queue_position for h in polled] == [None, 0, 1]  # running, then in line
    await sim.configure(hold=False)
    finished = [await until_finished(provider, h) for h in polled]
    assert [h.status for h in finished] == ["succeeded"] * 3
    assert (await sim.stats())["max_running"] == 1


async def test_reference_and_mask_reach_fal_as_data_uris(
    provider: FalProvider, sim: FalHandle
) -> None:
    inputs = (InputImage("reference", png(), "image/png"), InputImage("mask", png(), "image/png"))
    done = await until_finished(provider, await provider.submit(request(inputs=inputs)))
    assert done.status == "succeeded", done.error
    [arguments] = await sim_arguments(sim)
    assert arguments["image_url"].startswith("data:image/png;base64,")
    assert base64.b64decode(arguments["mask_url"].partition(",")[2]) == png()


# --- errors ---------------------------------------------------------------------------


async def test_bad_argument_fails_permanently_with_fals_message(provider: FalProvider) -> None:
    done = await until_finished(provider, await provider.submit(request(prompt="")))
    assert done.status == "failed"
    assert isinstance(done.error, ProviderPermanentError)
    assert (done.error.code, done.error.http_status) == ("invalid_input", 422)
    assert "field required" in done.error.message
    with pytest.raises(ProviderPermanentError):
        await provider.fetch_result(done, request())


async def test_model_crash_is_retryable(provider: FalProvider, sim: FalHandle) -> None:
    await sim.outcome("model_error")
    done = await until_finished(provider, await provider.submit(request()))
    assert done.status == "failed"
    assert isinstance(done.error, ProviderRetryableError)
    assert done.error.code == "server_error"


async def test_output_that_is_not_an_image_is_retryable(
    provider: FalProvider, sim: FalHandle
) -> None:
    await sim.outcome("not_image")
    done = await until_finished(provider, await provider.submit(request()))
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.fetch_result(done, request())
    assert caught.value.code == "invalid_image"


async def test_an_nsfw_flag_is_a_content_policy_refusal(
    provider: FalProvider, sim: FalHandle
) -> None:
    await sim.outcome("nsfw")
    done = await until_finished(provider, await provider.submit(request()))
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.fetch_result(done, request())
    assert caught.value.code == "content_policy"


@pytest.mark.parametrize(
    ("headers", "hint"), [({"Retry-After": "3"}, 3.0), ({}, None)], ids=["hint", "no-hint"]
)
async def test_429_is_rate_limited(
    provider: FalProvider, sim: FalHandle, headers: dict[str, str], hint: float | None
) -> None:
    body = {"detail": "Too many requests"}
    await sim.fault(method="POST", path="^/fal-ai", status=429, body=body, headers=headers)
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.submit(request())
    assert caught.value.retry_after_s == hint
    assert "Too many requests" in caught.value.message


async def test_5xx_is_retryable_and_may_have_reached_fal(
    provider: FalProvider, sim: FalHandle
) -> None:
    await sim.fault(method="POST", status=503, body={"detail": "Service Unavailable"})
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.submit(request())
    assert (caught.value.code, caught.value.http_status) == ("server_error", 503)
    assert may_have_reached_provider(caught.value)


async def test_wrong_key_is_permanent(sim: FalHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "not-the-key")
    provider = FalProvider("fal", config(sim))
    try:
        with pytest.raises(ProviderPermanentError) as caught:
            await provider.submit(request())
    finally:
        await provider.aclose()
    assert caught.value.code == "auth"
    assert "No user found" in caught.value.message
    assert "not-the-key" not in caught.value.message


@pytest.mark.parametrize(
    ("status", "code"),
    [
        ("malformed", "malformed_response"),
        ("huge", "response_too_large"),
        ("reset", "connection_error"),
    ],
)
async def test_broken_answers_are_retryable(
    provider: FalProvider, sim: FalHandle, status: str, code: str
) -> None:
    await sim.fault(method="POST", status=status)
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.submit(request())
    assert caught.value.code == code


async def test_a_hang_times_out(sim: FalHandle) -> None:
    provider = FalProvider("fal", config(sim, timeout_s=0.3))
    try:
        await sim.fault(method="GET", path="/status$", status="hang", seconds=5)
        handle = await provider.submit(request())
        with pytest.raises(ProviderRetryableError) as caught:
            await provider.poll(handle)
    finally:
        await provider.aclose()
    assert caught.value.code == "timeout"


async def test_unknown_status_is_malformed(provider: FalProvider, sim: FalHandle) -> None:
    handle = await provider.submit(request())
    await sim.fault(method="GET", path="/status$", status=200, body={"status": "WHATEVER"})
    with pytest.raises(ProviderRetryableError, match="unknown status"):
        await provider.poll(handle)


# --- cancel ---------------------------------------------------------------------------


async def test_cancel_while_queued_then_after_it_ran(provider: FalProvider, sim: FalHandle) -> None:
    await sim.configure(concurrency=1, hold=True)
    running = await provider.submit(request(seed=1))
    queued = await provider.submit(request(seed=2))
    await provider.cancel(queued)
    assert (await provider.poll(queued)).status == "canceled"
    # Already started: fal runs it to its end (ALREADY_COMPLETED), so it was not cancelled.
    with pytest.raises(ProviderPermanentError, match="left fal's queue") as raised:
        await provider.cancel(running)
    assert raised.value.code == "not_cancelled"
    await sim.configure(hold=False)
    assert (await until_finished(provider, running)).status == "succeeded"
    assert (await sim.stats())["cancelled"] == 1


# --- videos ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["mp4", "webm"])
async def test_video_endpoint_makes_a_checked_video(
    provider: FalProvider, sim: FalHandle, fmt: str
) -> None:
    pytest.importorskip("service.providers.video", reason="checked_video is not on main yet")
    wanted = request(
        model_ref="fal-ai/ltx-video", media="video", format=fmt, width=128, height=96,
        duration_s=1, fps=8,
    )  # fmt: skip
    done = await until_finished(provider, await provider.submit(wanted))
    assert done.status == "succeeded", done.error
    assert done.data["result"]["video"]["content_type"] == "video/mp4"
    output = await provider.fetch_result(done, wanted)
    assert (output.media, output.format, output.width, output.height) == ("video", fmt, 128, 96)
    assert output.frames == 8
    [arguments] = await sim_arguments(sim)
    assert (arguments["resolution"], arguments["aspect_ratio"], arguments["duration"]) == (
        "96p", "4:3", "1",
    )  # fmt: skip
