"""Declarative HTTP (kind http) against the Thena simulator, over real HTTP: the typing
rule, configuration errors with their paths, the synchronous and asynchronous shapes,
and every error class."""

from __future__ import annotations

import copy
import io
import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from PIL import Image

from service.providers.base import (
    GenerationRequest,
    InputImage,
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
    RemoteHandle,
)
from service.providers.config import ConfigError, parse_config
from service.providers.declarative import (
    DeclarativeAsyncProvider,
    DeclarativeSyncProvider,
    build,
    render_body,
    render_path,
)
from service.providers.declarative_config import HttpConfig
from service.providers.http import may_have_reached_provider
from service.providers.kinds import ProviderDeps
from simulators.runner import SimulatorThread
from simulators.thena import API_KEY, build_app, rate_limited_body

KEY_ENV = "DARKROOM_TEST_LUCKDATA_KEY"

# The configuration contract's Thena block, as an operator writes it.
THENA: dict[str, Any] = {
    "kind": "http",
    "base_url": "https://luckdata.io",
    "headers": {"X-Luckdata-Api-Key": {"env": KEY_ENV}},
    "submit": {
        "method": "POST",
        "path": "/api/thena/9wsC1QKXEoPh?user-agent=THENA",
        "body": {
            "model": "{{ ref }}",
            "width": "{{ width | string }}",
            "height": "{{ height | string }}",
            "prompt": "{{ prompt }}",
            "creative": "false",
        },
    },
    "result": {"image_url": "$.data.image_url"},
    "errors": {
        "rate_limited": [429],
        "permanent": [400, 401, 403, 422],
        "retry_after": "$.retry_after",
    },
}


def thena(url: str, **changes: Any) -> dict[str, Any]:
    config = copy.deepcopy(THENA) | {"base_url": url, "timeout_s": 5}
    return config | changes


def asynchronous(url: str, **changes: Any) -> dict[str, Any]:
    submit = THENA["submit"] | {"path": "/api/thena/tasks"}
    return thena(
        url,
        submit=submit,
        id="$.data.task_id",
        poll={"path": "/api/thena/tasks/{{ id }}"},
        status={
            "path": "$.data.status",
            "succeeded": ["succeeded"],
            "failed": ["failed"],
            "error": "$.data.error",
        },
        **changes,
    )


def request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "A dreamy castle floating in the clouds",
        "model_ref": "default",
        "width": 512,
        "height": 384,
        "format": "png",
        "seed": 7,
    }
    return GenerationRequest(**(values | overrides))


@pytest.fixture(autouse=True)
def api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, API_KEY)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """One simulator for the module (reset before each test): starting one takes longer
    than most tests here."""
    thread = SimulatorThread(app=build_app())
    try:
        yield thread.start()
    finally:
        thread.stop()


@pytest.fixture
async def sim(server: str) -> str:
    await control(server, "/_sim/reset", None)
    return server


async def control(url: str, path: str, body: Any, method: str = "POST") -> Any:
    # verify=False: plain HTTP, and it spares loading a CA bundle on every call.
    async with httpx.AsyncClient(base_url=url, verify=False) as client:
        response = await client.request(method, path, json=body)
        response.raise_for_status()
        return response.json()


async def api_requests(url: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = await control(url, "/_sim/requests", None, "GET")
    return [entry for entry in entries if entry["path"].startswith("/api/")]


@pytest.fixture
async def provider(sim: str) -> AsyncIterator[DeclarativeSyncProvider]:
    built = build("thena", HttpConfig.model_validate(thena(sim)), ProviderDeps())
    assert isinstance(built, DeclarativeSyncProvider)
    yield built
    await built.aclose()


@pytest.fixture
async def tasks(sim: str) -> AsyncIterator[DeclarativeAsyncProvider]:
    built = build("tasks", HttpConfig.model_validate(asynchronous(sim)), ProviderDeps())
    assert isinstance(built, DeclarativeAsyncProvider)
    yield built
    await built.aclose()


# --- the typing rule -------------------------------------------------------------------

VARIABLES: dict[str, Any] = {"width": 1024, "prompt": "a cat", "seed": 3, "options": {"steps": 4}}


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{ width }}", 1024),  # one placeholder: the variable's type
        ("{{ width | string }}", "1024"),  # a filter converts it
        ("{{ width | float }}", 1024.0),
        ("{{ options.steps }}", 4),
        ("{{ options }}", {"steps": 4}),
        ("{{ width }}px", "1024px"),  # anything else: a string
        (" {{ width }}", " 1024"),
        ("{{ width }}{{ seed }}", "10243"),
        ("{% if width %}{{ width }}{% endif %}", "1024"),
        ("false", "false"),
        ("{{ prompt }}", "a cat"),
    ],
)
def test_a_single_placeholder_keeps_its_type(template: str, expected: Any) -> None:
    value = render_body(template, VARIABLES, "body")
    assert value == expected
    assert type(value) is type(expected)


def test_a_body_is_rendered_recursively_and_literals_stay_as_written() -> None:
    body = {
        "size": {"w": "{{ width }}", "h": "{{ width | string }}"},
        "list": ["{{ seed }}", "seed={{ seed }}", 5, True, None],
        "n": 1,
    }
    assert render_body(body, VARIABLES, "body") == {
        "size": {"w": 1024, "h": "1024"},
        "list": [3, "seed=3", 5, True, None],
        "n": 1,
    }


def test_a_render_failure_names_its_place_and_is_permanent() -> None:
    with pytest.raises(
        ProviderPermanentError, match=r"submit\.body\.x\.y: 'options\.nope' is undefined"
    ) as caught:
        render_body({"x": {"y": "{{ options.nope }}"}}, VARIABLES, "submit.body")
    assert caught.value.code == "template_error"


def test_the_sandbox_holds_in_a_single_placeholder() -> None:
    with pytest.raises(ProviderPermanentError, match="undefined"):
        render_body("{{ width.__class__ }}", VARIABLES, "body")
    with pytest.raises(ProviderPermanentError, match="longer than"):
        render_body("{{ prompt * 10000 }}", VARIABLES, "body")


def test_path_values_are_quoted_but_a_ref_keeps_its_slashes() -> None:
    variables = {"id": "../a b?x#y", "ref": "fal-ai/flux dev"}
    assert render_path("/x/{{ id }}", variables, "poll.path") == "/x/..%2Fa%20b%3Fx%23y"
    assert render_path("/{{ ref }}/go", variables, "submit.path") == "/fal-ai/flux%20dev/go"


# --- configuration errors, with their paths -------------------------------------------


def config_errors(account: dict[str, Any]) -> list[str]:
    """The errors the service stops with at start (service.providers.config)."""
    text = json.dumps({"providers": {"thena": account}})
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="darkroom.yaml")
    message = str(caught.value)
    assert message.startswith("darkroom.yaml: ")
    return message.removeprefix("darkroom.yaml: ").split("; ")


def test_the_contract_block_is_valid_and_synchronous() -> None:
    config = HttpConfig.model_validate(THENA)
    assert not config.is_async
    assert config.headers["X-Luckdata-Api-Key"].env == KEY_ENV  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"submit": THENA["submit"] | {"body": {"width": "{{ wdith }}"}}},
            "providers.thena.submit.body.width: unknown variable 'wdith'",
        ),
        (
            {"submit": THENA["submit"] | {"body": {"a": {"b": ["ok", "{{ prompt"]}}}},
            "providers.thena.submit.body.a.b.1: template does not parse",
        ),
        (
            {"submit": THENA["submit"] | {"path": "/x/{{ id }}"}},
            "providers.thena.submit.path: unknown variable 'id'",
        ),
        (
            {"submit": THENA["submit"] | {"path": "https://elsewhere/x"}},
            "providers.thena.submit.path: a path, not a URL",
        ),
        ({"submit": THENA["submit"] | {"verb": "POST"}}, "providers.thena.submit.verb: Extra"),
        (
            {"result": {"image_url": "$.data["}},
            "providers.thena.result.image_url: Value error, '$.data['",
        ),
        ({"result": {"image_url": "data.url"}}, "providers.thena.result.image_url: Value error"),
        ({"result": {}}, "providers.thena.result: Value error, give exactly one"),
        ({"errors": {"retry_after": "$..x"}}, "providers.thena.errors.retry_after: Value error"),
        ({"errors": {"permanent": [200]}}, "providers.thena.errors.permanent.0: Input should be"),
        (
            {"errors": {"rate_limited": [429], "permanent": [429]}},
            "status 429 is in both rate_limited and permanent",
        ),
        ({"headers": {"X-Key": {"env": "not a name"}}}, "providers.thena.headers.X-Key"),
        ({"base_url": ""}, "providers.thena.base_url: an http(s) URL is required"),
        ({"id": "$.data.id"}, "providers.thena.id: an asynchronous API gives id, poll and status"),
        ({"flavour": "x"}, "providers.thena.flavour: Extra inputs are not permitted"),
    ],
)
def test_a_config_error_names_its_path(change: dict[str, Any], expected: str) -> None:
    errors = config_errors(copy.deepcopy(THENA) | change)
    assert any(error.startswith(expected) or expected in error for error in errors), errors


def test_a_poll_template_may_read_only_the_id_and_ref() -> None:
    config = asynchronous("https://api.example") | {"poll": {"path": "/t/{{ prompt }}"}}
    errors = config_errors(config)
    assert any(e.startswith("providers.thena.poll.path: unknown variable 'prompt'") for e in errors)


# --- the synchronous shape (the Thena API) --------------------------------------------


async def test_thena_generates_an_image_with_string_sizes(
    sim: str, provider: DeclarativeSyncProvider
) -> None:
    output = await provider.generate(request())
    assert (output.format, output.width, output.height) == ("png", 512, 384)
    with Image.open(io.BytesIO(output.data)) as image:
        assert image.format == "PNG"
    [sent] = await api_requests(sim)
    assert sent["query"] == "user-agent=THENA"
    assert sent["headers"]["x-luckdata-api-key"] == API_KEY
    assert sent["json"] == {
        "model": "default",
        "width": "512",
        "height": "384",
        "prompt": "A dreamy castle floating in the clouds",
        "creative": "false",
    }


async def test_an_untyped_width_is_sent_as_a_number_and_refused(sim: str) -> None:
    body = THENA["submit"]["body"] | {"width": "{{ width }}"}
    config = HttpConfig.model_validate(thena(sim, submit=THENA["submit"] | {"body": body}))
    provider = build("thena", config, ProviderDeps())
    assert isinstance(provider, DeclarativeSyncProvider)
    try:
        with pytest.raises(ProviderPermanentError, match="'width' must be a string") as caught:
            await provider.generate(request())
    finally:
        await provider.aclose()
    assert caught.value.http_status == 400
    [sent] = await api_requests(sim)
    assert sent["json"]["width"] == 512


async def test_base64_output_is_decoded(sim: str) -> None:
    await control(sim, "/_sim/config", {"b64": True}, "PATCH")
    config = HttpConfig.model_validate(thena(sim, result={"image_b64": "$.data.image_b64"}))
    provider = build("thena", config, ProviderDeps())
    assert isinstance(provider, DeclarativeSyncProvider)
    try:
        output = await provider.generate(request(format="jpeg"))
    finally:
        await provider.aclose()
    assert (output.format, output.width, output.height) == ("jpeg", 512, 384)
    assert [entry["path"] for entry in await api_requests(sim)] == [
        "/api/thena/9wsC1QKXEoPh"
    ]  # nothing downloaded


async def test_a_body_value_that_is_not_json_fails_before_anything_is_sent(sim: str) -> None:
    body = THENA["submit"]["body"] | {"seeds": "{{ range(3) }}"}
    config = HttpConfig.model_validate(thena(sim, submit=THENA["submit"] | {"body": body}))
    provider = build("thena", config, ProviderDeps())
    try:
        with pytest.raises(ProviderPermanentError, match=r"submit\.body: not JSON"):
            await provider.generate(request())  # type: ignore[union-attr]
    finally:
        await provider.aclose()
    assert await api_requests(sim) == []


async def test_a_reference_image_goes_where_the_body_says(sim: str) -> None:
    body = THENA["submit"]["body"] | {"image": "{{ reference_image }}"}
    config = HttpConfig.model_validate(thena(sim, submit=THENA["submit"] | {"body": body}))
    assert config.input_roles() == frozenset({"reference"})
    assert HttpConfig.model_validate(THENA).input_roles() == frozenset()
    reference = InputImage("reference", b"\x89PNG...", "image/png")
    provider = build("thena", config, ProviderDeps())
    try:
        await provider.generate(request(inputs=(reference,)))  # type: ignore[union-attr]
        public = InputImage("reference", b"...", "image/png", url="https://cdn.example/r.png")
        await provider.generate(request(inputs=(public,)))  # type: ignore[union-attr]
    finally:
        await provider.aclose()
    first, second = await api_requests(sim)
    assert first["json"]["image"] == reference.data_uri()
    assert second["json"]["image"] == "https://cdn.example/r.png"


async def test_a_missing_key_fails_before_anything_is_sent(
    sim: str, provider: DeclarativeSyncProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ProviderPermanentError, match=KEY_ENV) as caught:
        await provider.generate(request())
    assert caught.value.code == "provider_not_configured"
    assert await api_requests(sim) == []


async def test_a_header_from_the_environment_may_take_a_prefix(sim: str) -> None:
    headers = {
        "X-Luckdata-Api-Key": {"env": KEY_ENV},
        "Authorization": {"env": KEY_ENV, "prefix": "Key "},
    }
    config = HttpConfig.model_validate(thena(sim, headers=headers))
    provider = build("thena", config, ProviderDeps())
    try:
        await provider.generate(request())  # type: ignore[union-attr]
    finally:
        await provider.aclose()
    [sent] = await api_requests(sim)
    assert sent["headers"]["authorization"] == f"Key {API_KEY}"


async def test_a_wrong_key_is_permanent_and_the_key_is_not_in_the_error(
    provider: DeclarativeSyncProvider, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "wrong-secret-key")
    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(request())
    assert (caught.value.code, caught.value.http_status) == ("auth", 401)
    assert "wrong-secret-key" not in str(caught.value)


# --- errors, classified from the configuration ----------------------------------------


async def fault(url: str, **spec: Any) -> None:
    await control(url, "/_sim/faults", {"path": "^/api/", **spec})


async def test_429_takes_its_wait_from_the_body(
    sim: str, provider: DeclarativeSyncProvider
) -> None:
    await fault(sim, status=429, body=rate_limited_body(7))
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.generate(request())
    assert caught.value.retry_after_s == 7


async def test_429_without_a_body_hint_reads_retry_after(
    sim: str, provider: DeclarativeSyncProvider
) -> None:
    await fault(sim, status=429, body={"code": 429}, headers={"Retry-After": "3"})
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.generate(request())
    assert caught.value.retry_after_s == 3


async def test_429_with_no_hint_at_all(sim: str, provider: DeclarativeSyncProvider) -> None:
    await fault(sim, status=429, body={"code": 429, "message": "slow down"})
    with pytest.raises(ProviderRateLimited) as caught:
        await provider.generate(request())
    assert caught.value.retry_after_s is None


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (500, ProviderRetryableError, "server_error"),
        (503, ProviderRetryableError, "server_error"),
        (422, ProviderPermanentError, "invalid_input"),
        (403, ProviderPermanentError, "auth"),
        (404, ProviderPermanentError, "invalid_input"),  # unlisted 4xx: permanent
        (408, ProviderRetryableError, "request_timeout"),
    ],
)
async def test_statuses_are_classified(
    sim: str,
    provider: DeclarativeSyncProvider,
    status: int,
    kind: type[ProviderError],
    code: str,
) -> None:
    await fault(sim, status=status, body={"code": status, "message": f"status {status}"})
    with pytest.raises(kind) as caught:
        await provider.generate(request())
    assert type(caught.value) is kind
    assert (caught.value.code, caught.value.http_status) == (code, status)
    assert f"status {status}" in caught.value.message


async def test_configured_statuses_override_the_defaults(sim: str) -> None:
    errors = {"rate_limited": [429, 420], "retryable": [404], "permanent": [503]}
    config = HttpConfig.model_validate(thena(sim, errors=errors))
    provider = build("thena", config, ProviderDeps())
    try:
        for status, kind in ((404, ProviderRetryableError), (503, ProviderPermanentError)):
            await fault(sim, status=status, body={"message": "x"})
            with pytest.raises(kind) as caught:
                await provider.generate(request())  # type: ignore[union-attr]
            assert type(caught.value) is kind
        await fault(sim, status=420, body={"retry_after": 2})
        with pytest.raises(ProviderRateLimited):
            await provider.generate(request())  # type: ignore[union-attr]
    finally:
        await provider.aclose()


async def test_a_reset_is_retryable_and_may_have_reached_the_provider(
    sim: str, provider: DeclarativeSyncProvider
) -> None:
    await fault(sim, status="reset")
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == "connection_error"
    assert may_have_reached_provider(caught.value)


async def test_a_hang_times_out(sim: str) -> None:
    config = HttpConfig.model_validate(thena(sim, timeout_s=0.3))
    provider = build("thena", config, ProviderDeps())
    await fault(sim, status="hang", seconds=5)
    try:
        with pytest.raises(ProviderRetryableError) as caught:
            await provider.generate(request())  # type: ignore[union-attr]
    finally:
        await provider.aclose()
    assert caught.value.code == "timeout"


@pytest.mark.parametrize(
    ("answer", "code", "names"),
    [
        ("malformed", "malformed_response", "submit answer is not JSON"),
        ("no_image", "malformed_response", "result.image_url: $.data.image_url: no key"),
        ("not_image", "invalid_image", "not a decodable image"),
        ("huge", "response_too_large", "over the 16 MiB cap"),
    ],
)
async def test_broken_answers_are_retryable(
    sim: str, provider: DeclarativeSyncProvider, answer: str, code: str, names: str
) -> None:
    await control(sim, "/_sim/answers", {answer: 1})
    with pytest.raises(ProviderRetryableError) as caught:
        await provider.generate(request())
    assert caught.value.code == code
    assert names in caught.value.message
    assert (await provider.generate(request())).width == 512  # the next answer is fine


# --- the asynchronous shape ------------------------------------------------------------


async def test_an_asynchronous_api_is_submitted_polled_and_fetched(
    sim: str, tasks: DeclarativeAsyncProvider
) -> None:
    await control(sim, "/_sim/config", {"polls_until_done": 2}, "PATCH")
    job = request(width=256, height=256)
    handle = await tasks.submit(job)
    assert handle.status == "pending"
    stored = RemoteHandle.from_json(handle.to_json())  # as the engine keeps it
    first = await tasks.poll(stored)
    assert first.status == "pending"
    done = await tasks.poll(first)
    assert done.status == "succeeded"
    output = await tasks.fetch_result(done, job)
    assert (output.width, output.height) == (256, 256)
    paths = [(e["method"], e["path"]) for e in await api_requests(sim)]
    assert paths == [
        ("POST", "/api/thena/tasks"),
        ("GET", f"/api/thena/tasks/{handle.id}"),
        ("GET", f"/api/thena/tasks/{handle.id}"),
    ]


async def test_a_failed_generation_carries_the_providers_reason(
    tasks: DeclarativeAsyncProvider,
) -> None:
    handle = await tasks.poll(await tasks.submit(request(prompt="FAIL please")))
    assert handle.status == "failed"
    assert handle.error is not None
    assert "Content rejected by safety filter" in handle.error.message


async def test_base64_results_are_fetched_again_rather_than_stored(sim: str) -> None:
    await control(sim, "/_sim/config", {"b64": True}, "PATCH")
    config = HttpConfig.model_validate(asynchronous(sim, result={"image_b64": "$.data.image_b64"}))
    provider = build("tasks", config, ProviderDeps())
    assert isinstance(provider, DeclarativeAsyncProvider)
    try:
        handle = await provider.poll(await provider.submit(request()))
        assert handle.status == "succeeded"
        assert "result" not in handle.data
        output = await provider.fetch_result(handle, request())
    finally:
        await provider.aclose()
    assert output.width == 512
    assert len(await api_requests(sim)) == 3  # submit, poll, poll again for the bytes


def video_account(url: str) -> HttpConfig:
    body = THENA["submit"]["body"] | {"duration": "{{ duration_s | int | string }}"}
    config = asynchronous(url, result={"video_url": "$.data.video_url"})
    return HttpConfig.model_validate(config | {"submit": config["submit"] | {"body": body}})


async def test_a_video_is_polled_fetched_and_checked(sim: str) -> None:
    provider = build("videos", video_account(sim), ProviderDeps())
    assert isinstance(provider, DeclarativeAsyncProvider)
    job = request(media="video", format="mp4", duration_s=2, fps=8, width=64, height=48)
    try:
        handle = await provider.poll(await provider.submit(job))
        assert handle.status == "succeeded"
        output = await provider.fetch_result(handle, job)
    finally:
        await provider.aclose()
    assert (output.media, output.format, output.width, output.height) == ("video", "mp4", 64, 48)
    assert output.duration_s == pytest.approx(2, abs=0.3)
    [submitted, _] = await api_requests(sim)
    assert submitted["json"]["duration"] == "2"


@pytest.mark.parametrize(
    ("account", "job"),
    [
        ("video", {}),  # an image asked of a video account
        ("image", {"media": "video", "format": "mp4", "duration_s": 2}),
    ],
)
async def test_a_media_the_account_does_not_give_is_refused_before_sending(
    sim: str, account: str, job: dict[str, Any]
) -> None:
    config = (
        video_account(sim) if account == "video" else HttpConfig.model_validate(asynchronous(sim))
    )
    provider = build("tasks", config, ProviderDeps())
    assert isinstance(provider, DeclarativeAsyncProvider)
    try:
        with pytest.raises(ProviderPermanentError) as caught:
            await provider.submit(request(**job))
    finally:
        await provider.aclose()
    assert caught.value.code == "unsupported_media"
    assert await api_requests(sim) == []


async def test_an_unknown_task_id_is_permanent(tasks: DeclarativeAsyncProvider) -> None:
    with pytest.raises(ProviderPermanentError) as caught:
        await tasks.poll(RemoteHandle("task-gone", data={"ref": "default"}))
    assert caught.value.http_status == 404


async def test_a_submit_answer_without_an_id_is_malformed(
    sim: str, tasks: DeclarativeAsyncProvider
) -> None:
    await fault(sim, status=200, body={"code": 200, "data": {}})
    with pytest.raises(ProviderRetryableError, match=r"id: \$\.data\.task_id: no key 'task_id'"):
        await tasks.submit(request())


async def test_a_poll_answer_without_a_status_is_malformed(
    sim: str, tasks: DeclarativeAsyncProvider
) -> None:
    handle = await tasks.submit(request())
    await fault(sim, status=200, body={"code": 200, "data": {"state": "x"}})
    with pytest.raises(ProviderRetryableError, match=r"status\.path: \$\.data\.status: no key"):
        await tasks.poll(handle)
