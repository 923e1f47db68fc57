"""The OpenAI images adapter against the provider simulator, over real HTTP."""

from __future__ import annotations

import base64
import io
import json
import time
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from service.providers.account import AccountConfig
from service.providers.base import (
    GenerationRequest,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    SyncProvider,
)
from service.providers.catalogue import account_config, build_provider
from service.providers.openai import OpenAIImagesProvider, generation_body
from simulators import SimConfig, SimulatorHandle, run_simulator

TOKEN_ENV = "DARKROOM_TEST_OPENAI_TOKEN"
PIL_FORMATS = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}

INTERVAL_S = 10.0  # the simulator's rate limit in the 429 tests: one request per this


@pytest.fixture
async def sim() -> AsyncIterator[SimulatorHandle]:
    async with run_simulator(SimConfig()) as sim:
        yield sim


@pytest.fixture(autouse=True)
def token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "sim-token")


def account(base_url: str, **overrides: object) -> AccountConfig:
    values: dict[str, object] = {"kind": "openai", "base_url": base_url, "token_env": TOKEN_ENV}
    return account_config(values | overrides)


@pytest.fixture
async def provider(sim: SimulatorHandle) -> AsyncIterator[OpenAIImagesProvider]:
    provider = OpenAIImagesProvider("openai", account(sim.url + "/v1", timeout_s=5))
    yield provider
    await provider.aclose()


def request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a fox in the snow",
        "model_ref": "gpt-image-1",
        "width": 1024,
        "height": 1024,
        "format": "png",
        "seed": 1,
    }
    return GenerationRequest(**(values | overrides))


def test_is_a_synchronous_provider() -> None:
    provider = build_provider("oa", account("http://x/v1"))
    assert isinstance(provider, OpenAIImagesProvider)
    assert isinstance(provider, SyncProvider)
    assert (provider.name, provider.kind) == ("oa", "openai")


def test_request_body() -> None:
    assert generation_body(request(format="webp", width=1536)) == {
        "model": "gpt-image-1",
        "prompt": "a fox in the snow",
        "n": 1,
        "size": "1536x1024",
        "output_format": "webp",
    }
    dalle = generation_body(request(model_ref="dall-e-3"))
    assert dalle["response_format"] == "b64_json"
    assert "output_format" not in dalle


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
async def test_generates_the_asked_image(provider: OpenAIImagesProvider, fmt: str) -> None:
    image = await provider.generate(request(format=fmt, width=1536, height=1024))
    decoded = Image.open(io.BytesIO(image.data))
    assert (decoded.format, decoded.size) == (PIL_FORMATS[fmt], (1536, 1024))
    assert (image.format, image.width, image.height) == (fmt, 1536, 1024)
    assert image.usage["output_tokens"] > 0
    assert image.usage["total_tokens"] >= image.usage["output_tokens"]


async def test_any_size_on_a_compatible_model(provider: OpenAIImagesProvider) -> None:
    image = await provider.generate(request(model_ref="sim-flux", width=320, height=200))
    assert (image.width, image.height) == (320, 200)


async def test_missing_token(sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(TOKEN_ENV)
    provider = build_provider("openai", account(sim.url + "/v1"))
    with pytest.raises(ProviderPermanentError, match=TOKEN_ENV) as caught:
        await provider.generate(request())
    assert caught.value.code == "provider_not_configured"
    await provider.aclose()


# --- errors ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "hinted"), [("retry_after", True), ("body", True), ("none", False)]
)
async def test_429(
    provider: OpenAIImagesProvider, sim: SimulatorHandle, mode: str, hinted: bool
) -> None:
    # One token per INTERVAL_S: a loaded machine cannot be slow enough to see the next one,
    # and the hint is checked against the time the two requests really took.
    await sim.configure(rate_per_s=1 / INTERVAL_S, burst=1, rate_limit_hint=mode)
    began = time.monotonic()
    await provider.generate(request())
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.generate(request(seed=2))
    error = caught.value
    assert error.message.startswith("openai 429: Rate limit reached for gpt-image-1")
    if hinted:
        assert error.retry_after_s is not None
        elapsed = time.monotonic() - began
        assert INTERVAL_S - elapsed - 0.01 <= error.retry_after_s <= INTERVAL_S
    else:
        assert error.retry_after_s is None


@pytest.mark.parametrize(
    ("fault", "status", "text"),
    [
        ("error_500", 500, "The server had an error while processing your request."),
        ("error_502", 502, "502 Bad Gateway"),
        ("error_503", 503, "The server is overloaded or not ready yet."),
    ],
)
async def test_5xx_is_retryable(
    provider: OpenAIImagesProvider, sim: SimulatorHandle, fault: str, status: int, text: str
) -> None:
    await sim.configure(**{fault: 1.0})
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert (caught.value.code, caught.value.http_status) == ("server_error", status)
    assert caught.value.message.startswith(f"openai {status}: {text}")


async def test_connection_reset(provider: OpenAIImagesProvider, sim: SimulatorHandle) -> None:
    await sim.configure(reset=1.0)
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == "connection_error"


async def test_hang_times_out(sim: SimulatorHandle) -> None:
    await sim.configure(hang=1.0)
    provider = OpenAIImagesProvider("openai", account(sim.url + "/v1", timeout_s=0.5))
    started = time.monotonic()
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == "timeout"
    assert time.monotonic() - started < 5
    await provider.aclose()


async def test_malformed_json(provider: OpenAIImagesProvider, sim: SimulatorHandle) -> None:
    await sim.configure(malformed_json=1.0)
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == "malformed_response"


async def test_not_an_image(provider: OpenAIImagesProvider, sim: SimulatorHandle) -> None:
    await sim.configure(not_image=1.0)
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == "invalid_image"


async def test_huge_body_is_refused_without_loading_it(
    provider: OpenAIImagesProvider, sim: SimulatorHandle
) -> None:
    await sim.configure(huge_body=1.0, huge_body_bytes=80 * 1024 * 1024)
    tracemalloc.start()
    try:
        with pytest.raises(ProviderRetryableError) as caught:
            await provider.generate(request())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code == "response_too_large"
    assert peak < 20 * 1024 * 1024


async def test_wrong_token_is_auth(sim: SimulatorHandle, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(TOKEN_ENV, "sk-wrong-token")
    provider = OpenAIImagesProvider("openai", account(sim.url + "/v1"))
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(request())
    assert (caught.value.code, caught.value.http_status) == ("auth", 401)
    assert caught.value.message.startswith("openai 401: Incorrect API key provided")
    await provider.aclose()


async def test_content_policy(provider: OpenAIImagesProvider) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(request(prompt="something FORBIDDEN"))
    assert (caught.value.code, caught.value.http_status) == ("content_policy", 400)
    assert caught.value.message.startswith("openai 400: Your request was rejected")


async def test_invalid_size_is_invalid_input(provider: OpenAIImagesProvider) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(request(width=512, height=512))
    assert caught.value.code == "invalid_input"
    assert "Invalid value: '512x512'" in caught.value.message


# --- url outputs and odd bodies (an OpenAI-compatible API), through MockTransport ----


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "navy").save(buffer, "PNG")
    return buffer.getvalue()


def mock_provider(handler: Any) -> OpenAIImagesProvider:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return OpenAIImagesProvider("compat", account("https://compat.test/v1"), http=client)


async def test_url_output_is_downloaded_and_converted() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        if request.url.host == "compat.test":
            assert json.loads(request.content)["output_format"] == "jpeg"
            return httpx.Response(200, json={"data": [{"url": "https://cdn.test/o.png"}]})
        assert "authorization" not in request.headers
        return httpx.Response(200, content=png(64, 32))

    image = await mock_provider(handler).generate(request(format="jpeg"))
    assert seen == ["https://compat.test/v1/images/generations", "https://cdn.test/o.png"]
    assert Image.open(io.BytesIO(image.data)).format == "JPEG"
    assert (image.format, image.width, image.height, image.usage) == ("jpeg", 64, 32, {})


@pytest.mark.parametrize(
    "body",
    [
        {"data": []},
        {"created": 1},
        {"data": [{"revised_prompt": "x"}]},
        {"data": [{"b64_json": "not base64!!"}]},
        {"data": ["x"]},
    ],
)
async def test_unexpected_success_bodies_are_malformed(body: dict[str, Any]) -> None:
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == "malformed_response"


async def test_insufficient_quota_is_permanent() -> None:
    error = {
        "message": "You exceeded your current quota, please check your plan and billing details.",
        "type": "insufficient_quota",
        "code": "insufficient_quota",
    }
    provider = mock_provider(lambda request: httpx.Response(429, json={"error": error}))
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(request())
    assert caught.value.code == "insufficient_quota"
    assert not isinstance(caught.value, ProviderRateLimited)


async def test_b64_output() -> None:
    encoded = base64.b64encode(png(40, 40)).decode()
    body = {"data": [{"b64_json": encoded}], "usage": {"total_tokens": 5}}
    provider = mock_provider(lambda request: httpx.Response(200, json=body))
    image = await provider.generate(request())
    assert (image.width, image.usage) == (40, {"total_tokens": 5})
