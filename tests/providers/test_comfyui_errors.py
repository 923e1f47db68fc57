"""The ComfyUI provider when things go wrong: execution errors, interruptions, lost
prompts, an auth proxy, and the simulator's network faults."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from service.providers.base import (
    ProviderError,
    ProviderPermanentError,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.comfyui import ComfyUIProvider
from service.providers.http import may_have_reached_provider
from tests.providers import comfyui_helpers
from tests.providers.comfyui_helpers import (
    Control,
    make_provider,
    poll_until_finished,
    request,
)

# The module's simulator (reset before each test) and workflows folder.
server_url, sim = comfyui_helpers.server_url, comfyui_helpers.sim
config_file = comfyui_helpers.config_file

TOKEN_ENV = "DARKROOM_TEST_COMFY_TOKEN"


@pytest.fixture
async def provider(sim: Control, config_file: Path) -> AsyncIterator[ComfyUIProvider]:
    provider = make_provider(sim.url, config_file, timeout_s=1.0)
    yield provider
    await provider.aclose()


@pytest.mark.parametrize(
    ("exception_type", "exception_message", "retryable"),
    [
        ("RuntimeError", "mat1 and mat2 shapes cannot be multiplied (77x2048 and 768x320)", False),
        ("torch.OutOfMemoryError", "Allocation on device", True),
    ],
)
async def test_an_execution_error_fails_with_the_node_and_exception(
    provider: ComfyUIProvider,
    sim: Control,
    exception_type: str,
    exception_message: str,
    retryable: bool,
) -> None:
    error_spec = {"count": 1, "exception_type": exception_type}
    await sim.configure(execution_error=error_spec | {"exception_message": exception_message})
    handle = await provider.submit(request())

    done = await poll_until_finished(provider, handle)

    assert done.status == "failed"
    assert done.error is not None
    assert done.error.retryable is retryable
    assert "node 3 (KSampler)" in done.error.message
    assert exception_message in done.error.message
    with pytest.raises(ProviderError):
        await provider.fetch_result(done, request())


async def test_cancel_takes_a_waiting_prompt_out_of_the_queue_and_interrupts_a_running_one(
    provider: ComfyUIProvider, sim: Control
) -> None:
    await sim.configure(run_s=3.0)
    running = await provider.submit(request(job_id="job-1"))
    waiting = await provider.submit(request(job_id="job-2"))
    assert (await provider.poll(waiting)).queue_position == 1

    await provider.cancel(waiting)
    assert (await sim.state())["queue_pending"] == []
    await provider.cancel(running)

    done = await poll_until_finished(provider, running)
    assert done.status == "canceled"
    assert done.error is not None
    assert "interrupted" in done.error.message


async def test_a_prompt_the_server_has_forgotten_is_lost_and_retryable(
    provider: ComfyUIProvider,
) -> None:
    done = await provider.poll(RemoteHandle("3f2b6f0e-0000-4000-8000-000000000000"))

    assert done.status == "failed"
    assert isinstance(done.error, ProviderRetryableError)
    assert done.error.code == "prompt_lost"


async def test_a_lost_submit_is_found_by_its_job(provider: ComfyUIProvider, sim: Control) -> None:
    job = request(job_id="job-lost")
    handle = await provider.submit(job)
    await poll_until_finished(provider, handle)
    since = datetime.now(UTC)

    found = await provider.find_submitted(job, since, exclude=frozenset())
    assert found is not None
    assert (found.id, found.status) == (handle.id, "succeeded")
    assert await provider.find_submitted(job, since, exclude=frozenset({handle.id})) is None
    assert (
        await provider.find_submitted(request(job_id="other"), since, exclude=frozenset()) is None
    )


async def test_node_errors_in_an_accepted_prompt_are_permanent_and_the_prompt_is_dropped(
    provider: ComfyUIProvider, sim: Control, config_file: Path
) -> None:
    path = config_file.parent / "workflows" / "sdxl.json"
    workflow = json.loads(path.read_text())
    workflow["20"] = {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0]}}
    workflow["21"] = {"class_type": "PreviewImage", "inputs": {"images": ["20", 0]}}
    path.write_text(json.dumps(workflow))

    with pytest.raises(ProviderPermanentError, match=r"node 20 \(VAEDecode\): Required input"):
        await provider.submit(request())

    [dropped] = await sim.requests("POST", "/queue")
    assert dropped["json"]["delete"]


async def test_an_auth_proxy_gets_the_bearer_token(
    sim: Control, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await sim.configure(token="proxy-secret")
    anonymous = make_provider(sim.url, config_file)
    monkeypatch.setenv(TOKEN_ENV, "proxy-secret")
    authorised = make_provider(sim.url, config_file, token_env=TOKEN_ENV)
    try:
        with pytest.raises(ProviderPermanentError) as raised:
            await anonymous.submit(request())
        assert raised.value.code == "auth"
        handle = await authorised.submit(request())
        assert await authorised.listener.wait(handle.id, 10)
        done = await authorised.poll(handle)
        output = await authorised.fetch_result(done, request())
        assert output.width == 320
    finally:
        await anonymous.aclose()
        await authorised.aclose()


async def test_a_token_env_that_is_not_set_is_named(
    sim: Control, config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(TOKEN_ENV, raising=False)
    provider = make_provider(sim.url, config_file, token_env=TOKEN_ENV)
    try:
        with pytest.raises(ProviderPermanentError, match=TOKEN_ENV):
            await provider.submit(request())
    finally:
        await provider.aclose()


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        ({"status": 503, "body": {"error": "busy"}}, "server_error"),
        ({"status": "reset"}, "connection_error"),
        ({"status": "hang", "seconds": 5}, "timeout"),
        ({"status": "malformed"}, "malformed_response"),
    ],
)
async def test_a_broken_answer_to_a_submit_is_retryable_and_may_have_reached_comfyui(
    provider: ComfyUIProvider, sim: Control, fault: dict[str, object], code: str
) -> None:
    await sim.fault(method="POST", path="^/prompt$", **fault)

    with pytest.raises(ProviderRetryableError) as raised:
        await provider.submit(request())

    assert raised.value.code == code
    assert may_have_reached_provider(raised.value)


@pytest.mark.parametrize(
    ("fault", "code"),
    [
        (
            {"status": "huge", "headers": {"x-sim-size": str(20 * 1024 * 1024)}},
            "response_too_large",
        ),
        ({"status": 502, "body": {}}, "server_error"),
    ],
)
async def test_a_broken_history_answer_is_retryable(
    provider: ComfyUIProvider, sim: Control, fault: dict[str, object], code: str
) -> None:
    handle = await provider.submit(request())
    await sim.fault(method="GET", path="^/history/", **fault)

    with pytest.raises(ProviderRetryableError) as raised:
        await provider.poll(handle)
    assert raised.value.code == code


async def test_a_view_that_is_not_an_image_is_retryable(
    provider: ComfyUIProvider, sim: Control
) -> None:
    done = await poll_until_finished(provider, await provider.submit(request()))
    await sim.fault(method="GET", path="^/view$", status=200, body={"html": "not an image"})

    with pytest.raises(ProviderRetryableError) as raised:
        await provider.fetch_result(done, request())
    assert raised.value.code == "invalid_image"
