"""Atlas Cloud errors against the simulator: every HTTP failure classified once (with
Atlas's own message), failed predictions that say why, and outputs that do not decode."""

from __future__ import annotations

from typing import Any

import pytest

from service.providers.atlas import AtlasProvider, prediction_failure
from service.providers.base import (
    GenerationRequest,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.http import may_have_reached_provider
from simulators.atlas import MODERATION_ERROR
from simulators.atlas_control import AtlasHandle
from tests.providers import atlas_fixtures
from tests.providers.atlas_fixtures import (
    SHAPES,
    TOKEN_ENV,
    finish,
    image_request,
    make_provider,
    video_request,
)

pytestmark = pytest.mark.usefixtures("atlas_token")
# The module's fixtures (pytest finds them by name here).
atlas_sim_url, atlas_token = atlas_fixtures.atlas_sim_url, atlas_fixtures.atlas_token
sim, provider = atlas_fixtures.sim, atlas_fixtures.provider

# --- errors, classified once ----------------------------------------------------------

SUBMIT_FAULTS: list[tuple[dict[str, Any], type[ProviderError], str, str]] = [
    ({"status": 429, "headers": {"Retry-After": "3"}}, ProviderRateLimited, "rate_limited", ""),
    ({"status": 429}, ProviderRateLimited, "rate_limited", "rate limit exceeded"),
    ({"status": 500}, ProviderRetryableError, "server_error", "atlas 500: internal error"),
    ({"status": 503}, ProviderRetryableError, "server_error", "temporarily unavailable"),
    ({"status": "bad_gateway"}, ProviderRetryableError, "server_error", "502 Bad Gateway"),
    ({"status": 402}, ProviderPermanentError, "insufficient_quota", "insufficient balance"),
    ({"status": 403}, ProviderPermanentError, "auth", "atlas 403: forbidden"),
    ({"status": "malformed"}, ProviderRetryableError, "malformed_response", "not JSON"),
    ({"status": "huge"}, ProviderRetryableError, "response_too_large", "MiB cap"),
    ({"status": "reset"}, ProviderRetryableError, "connection_error", ""),
    # Atlas's error envelope inside a 200 means what its code says.
    (
        {"status": 200, "body": {"code": 500, "msg": "upstream busy", "data": None}},
        ProviderRetryableError,
        "server_error",
        "atlas 500: upstream busy",
    ),
    (
        {"status": 200, "body": {"code": 200, "data": {"status": "processing"}}},
        ProviderRetryableError,
        "malformed_response",
        "not a prediction",
    ),
]


@pytest.mark.parametrize(
    ("fault", "kind", "code", "words"),
    SUBMIT_FAULTS,
    ids=[str(fault.get("body", fault["status"])) for fault, *_ in SUBMIT_FAULTS],
)
async def test_submit_errors_are_classified(
    sim: AtlasHandle,
    provider: AtlasProvider,
    fault: dict[str, Any],
    kind: type[ProviderError],
    code: str,
    words: str,
) -> None:
    await sim.fault(path="generateImage", **fault)
    with pytest.raises(ProviderError) as caught:
        await provider.submit(image_request())
    error = caught.value
    assert type(error) is kind
    assert error.code == code
    assert words in error.message
    if fault.get("headers"):
        assert isinstance(error, ProviderRateLimited)
        assert error.retry_after_s == 3.0
    elif isinstance(error, ProviderRateLimited):
        assert error.retry_after_s is None
    # Only a 4xx certainly created nothing; after anything else, look before resending.
    refused = isinstance(fault["status"], int) and 400 <= fault["status"] < 500
    assert may_have_reached_provider(error) is not refused


async def test_a_bad_request_says_what_atlas_said(
    sim: AtlasHandle, provider: AtlasProvider
) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.submit(video_request(options={"duration": 99}))
    assert caught.value.code == "invalid_input"
    assert caught.value.message == "atlas 400: duration must be between 1 and 15"


async def test_a_wrong_key_is_an_auth_error_without_the_key(
    sim: AtlasHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "not-the-key")
    provider = make_provider(sim.url)
    try:
        with pytest.raises(ProviderPermanentError) as caught:
            await provider.submit(image_request())
    finally:
        await provider.aclose()
    assert caught.value.code == "auth"
    assert caught.value.http_status == 401
    assert "unauthorized" in caught.value.message
    assert "not-the-key" not in caught.value.message


async def test_a_missing_key_names_the_variable(sim: AtlasHandle) -> None:
    provider = make_provider(sim.url, token_env="DARKROOM_TEST_ATLAS_UNSET")
    try:
        with pytest.raises(ProviderPermanentError) as caught:
            await provider.submit(image_request())
    finally:
        await provider.aclose()
    assert caught.value.code == "provider_not_configured"
    assert "DARKROOM_TEST_ATLAS_UNSET" in caught.value.message
    assert await sim.requests() == []


async def test_a_hanging_poll_times_out(sim: AtlasHandle) -> None:
    provider = make_provider(sim.url, timeout_s=0.3)
    try:
        handle = await provider.submit(image_request())
        await sim.fault("hang", path="prediction", seconds=10)
        with pytest.raises(ProviderRetryableError) as caught:
            await provider.poll(handle)
    finally:
        await provider.aclose()
    assert caught.value.code == "timeout"


async def test_a_poll_of_an_unknown_prediction(sim: AtlasHandle, provider: AtlasProvider) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.poll(RemoteHandle("no-such-prediction"))
    assert caught.value.http_status == 404
    assert "prediction not found" in caught.value.message


# --- failed predictions say why -------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
async def test_a_moderated_prediction_fails_permanently_with_the_reason(
    sim: AtlasHandle, provider: AtlasProvider, shape: str
) -> None:
    await sim.configure(shape=shape)
    request = image_request(prompt="a FORBIDDEN scene")
    done = await finish(provider, await provider.submit(request))
    assert done.status == "failed"
    error = done.error
    assert isinstance(error, ProviderPermanentError)
    assert error.code == "content_policy"
    assert MODERATION_ERROR in error.message
    assert "error_code 1039" in error.message
    # The reason survives the trip through the job row.
    stored = RemoteHandle.from_json(done.to_json())
    assert stored.error is not None
    assert stored.error.message == error.message
    with pytest.raises(ProviderPermanentError, match="content moderation"):
        await provider.fetch_result(stored, request)


async def test_a_transient_failure_is_retryable_with_the_reason(
    sim: AtlasHandle, provider: AtlasProvider
) -> None:
    await sim.configure(fail_next=1, failure_error="GPU worker lost, please retry")
    done = await finish(provider, await provider.submit(video_request()))
    assert isinstance(done.error, ProviderRetryableError)
    assert done.error.code == "generation_failed"
    assert done.error.message.endswith("failed: GPU worker lost, please retry")


@pytest.mark.parametrize(
    ("error", "error_code", "kind", "code"),
    [
        ("", None, ProviderRetryableError, "generation_failed"),
        (None, "1039", ProviderPermanentError, "content_policy"),
        ("Invalid parameter: duration", 1001, ProviderPermanentError, "invalid_input"),
        ("NSFW content detected", None, ProviderPermanentError, "content_policy"),
        ("timeout while generating", 1500, ProviderRetryableError, "generation_failed"),
    ],
)
def test_prediction_failure_classification(
    error: Any, error_code: Any, kind: type[ProviderError], code: str
) -> None:
    failure = prediction_failure("atlas", "p1", error, error_code)
    assert type(failure) is kind
    assert failure.code == code
    assert failure.message.startswith("atlas: prediction p1 failed: ")


# --- outputs are checked --------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_", "output", "code"),
    [
        (image_request(), "not_media", "invalid_image"),
        (image_request(), "truncated", "invalid_image"),
        pytest.param(video_request(), "not_media", "invalid_output"),
        pytest.param(video_request(), "truncated", "invalid_output"),
    ],
    ids=["image not media", "image truncated", "video not media", "video truncated"],
)
async def test_broken_outputs_are_retryable(
    sim: AtlasHandle,
    provider: AtlasProvider,
    request_: GenerationRequest,
    output: str,
    code: str,
) -> None:
    await sim.configure(output=output)
    done = await finish(provider, await provider.submit(request_))
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.fetch_result(done, request_)
    assert caught.value.code == code
    assert caught.value.message.startswith("atlas")


async def test_completed_without_an_output_url(provider: AtlasProvider) -> None:
    handle = provider.parse_prediction({"id": "p1", "status": "completed", "output": {}})
    with pytest.raises(ProviderRetryableError, match="without an output URL"):
        await provider.fetch_result(handle, image_request())
