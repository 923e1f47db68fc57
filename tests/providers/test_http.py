"""Shared provider HTTP: retry hints, error classification, capped reads, transport errors."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from email.utils import format_datetime

import httpx
import pytest

from service.providers.account import AccountConfig
from service.providers.base import (
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)
from service.providers.catalogue import account_config
from service.providers.http import (
    USER_AGENT,
    ProviderHTTP,
    build_client,
    classify_error_response,
    error_details,
    hint_from_message,
    retry_after_hint,
)

NOW = 1_700_000_000.0
MIB = 1024 * 1024


@pytest.mark.parametrize(
    ("message", "seconds"),
    [
        ("Request was throttled. Your rate limit resets in ~30s.", 30.0),
        ("Rate limit reached for gpt-image-1. Please try again in 1.2s.", 1.2),
        ("Please try again in 20ms.", 0.02),
        ("Please try again in 6m0s.", 360.0),
        ("Please try again in 1m30.5s.", 90.5),
        ("Request was throttled. Expected available in 2 seconds.", 2.0),
        ("Expected available in 1 second", 1.0),
        ("Retry after 5 minutes", 300.0),
        ("Too many requests", None),
        ("try again later", None),
    ],
)
def test_hint_from_message(message: str, seconds: float | None) -> None:
    assert hint_from_message(message) == pytest.approx(seconds)


def test_retry_after_header_in_seconds_and_as_http_date() -> None:
    assert retry_after_hint({"Retry-After": "7"}, None, "", now=NOW) == 7.0
    assert retry_after_hint({"retry-after": "1.5"}, None, "", now=NOW) == 1.5
    when = format_datetime(datetime.fromtimestamp(NOW + 42, UTC), usegmt=True)
    assert retry_after_hint({"Retry-After": when}, None, "", now=NOW) == pytest.approx(42)
    past = format_datetime(datetime.fromtimestamp(NOW - 42, UTC), usegmt=True)
    assert retry_after_hint({"Retry-After": past}, None, "", now=NOW) == 0.0
    assert retry_after_hint({"Retry-After": "soon"}, None, "", now=NOW) is None
    assert retry_after_hint({"Retry-After": "-3"}, None, "", now=NOW) is None


def test_retry_after_precedence() -> None:
    headers = {"retry-after-ms": "250", "Retry-After": "1"}
    assert retry_after_hint(headers, {"retry_after": 9}, "try again in 3s") == 0.25
    assert retry_after_hint({"Retry-After": "1"}, {"retry_after": 9}, "try again in 3s") == 1.0
    assert retry_after_hint({}, {"retry_after": 9}, "try again in 3s") == 9.0
    assert retry_after_hint({}, {"error": {"retry_after": "4"}}, "") == 4.0
    assert retry_after_hint({}, {"retry_after": True}, "try again in 3s") == 3.0
    assert retry_after_hint({}, None, "") is None


def classify(
    status: int, body: bytes | str, headers: dict[str, str] | None = None
) -> ProviderError:
    raw = body.encode() if isinstance(body, str) else body
    return classify_error_response("prov", status, headers or {}, raw, now=NOW)


def test_429_is_rate_limited_with_hint() -> None:
    error = classify(429, '{"detail": "Request was throttled.", "retry_after": 3}')
    assert isinstance(error, ProviderRateLimited)
    assert (error.code, error.retry_after_s, error.http_status) == ("rate_limited", 3.0, 429)
    assert str(error) == "prov 429: Request was throttled."
    assert classify(429, "slow down", {"Retry-After": "2"}).retry_after_s == 2.0  # type: ignore[attr-defined]
    assert classify(429, "").retry_after_s is None  # type: ignore[attr-defined]


def test_openai_insufficient_quota_is_permanent() -> None:
    body = (
        '{"error": {"message": "You exceeded your current quota, please check your plan.",'
        ' "type": "insufficient_quota", "param": null, "code": "insufficient_quota"}}'
    )
    error = classify(429, body)
    assert isinstance(error, ProviderPermanentError)
    assert error.code == "insufficient_quota"
    assert "You exceeded your current quota" in error.message


@pytest.mark.parametrize(
    ("status", "kind", "code"),
    [
        (500, ProviderRetryableError, "server_error"),
        (502, ProviderRetryableError, "server_error"),
        (503, ProviderRetryableError, "server_error"),
        (504, ProviderRetryableError, "server_error"),
        (408, ProviderRetryableError, "request_timeout"),
        (409, ProviderRetryableError, "conflict"),
        (425, ProviderRetryableError, "too_early"),
        (400, ProviderPermanentError, "invalid_input"),
        (404, ProviderPermanentError, "invalid_input"),
        (422, ProviderPermanentError, "invalid_input"),
        (401, ProviderPermanentError, "auth"),
        (403, ProviderPermanentError, "auth"),
        (402, ProviderPermanentError, "insufficient_quota"),
    ],
)
def test_status_classification(status: int, kind: type[ProviderError], code: str) -> None:
    error = classify(status, '{"detail": "something went wrong"}')
    assert type(error) is kind
    assert error.code == code
    assert error.http_status == status
    assert error.message == f"prov {status}: something went wrong"


@pytest.mark.parametrize("code", ["content_policy_violation", "moderation_blocked"])
def test_content_policy(code: str) -> None:
    body = (
        '{"error": {"message": "Your request was rejected as a result of our safety system.",'
        f' "type": "invalid_request_error", "code": "{code}"}}}}'
    )
    error = classify(400, body)
    assert isinstance(error, ProviderPermanentError)
    assert error.code == "content_policy"
    assert error.message.startswith("prov 400: Your request was rejected")


@pytest.mark.parametrize(
    ("body", "message", "code"),
    [
        (b'{"error": {"message": "bad size", "code": "invalid_size"}}', "bad size", "invalid_size"),
        (
            b'{"error": {"message": "m", "type": "invalid_request_error"}}',
            "m",
            "invalid_request_error",
        ),
        (b'{"error": "plain error string"}', "plain error string", None),
        (
            b'{"title": "Input validation failed", "detail": "- prompt: required"}',
            "- prompt: required",
            None,
        ),
        (b'{"title": "Unauthenticated"}', "Unauthenticated", None),
        (b'{"detail": [{"loc": ["body"], "msg": "field required"}]}', "field required", None),
        (b'{"message": "nope", "code": "E1"}', "nope", "E1"),
        (b"<html>Bad Gateway</html>", "<html>Bad Gateway</html>", None),
        (b"", "no message", None),
    ],
)
def test_error_details(body: bytes, message: str, code: str | None) -> None:
    assert error_details(body)[:2] == (message, code)


def test_long_messages_are_cut() -> None:
    message, _, _ = error_details(b"x" * 10_000)
    assert len(message) == 500
    assert message.endswith("...")


# --- the client and transport errors, through httpx.MockTransport ---------------------

Handler = Callable[[httpx.Request], httpx.Response]


def account(**overrides: object) -> AccountConfig:
    values: dict[str, object] = {
        "kind": "openai",
        "base_url": "https://api.example.test/v1",
        "token_env": "DARKROOM_TEST_HTTP_TOKEN",
        "timeout_s": 5.0,
    }
    return account_config(values | overrides)


@pytest.fixture
def token(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("DARKROOM_TEST_HTTP_TOKEN", "tok-123")
    return "tok-123"


def mock_http(handler: Handler, **overrides: object) -> ProviderHTTP:
    return ProviderHTTP(
        "prov", account(**overrides), httpx.AsyncClient(transport=httpx.MockTransport(handler))
    )


def test_build_client_sets_base_url_auth_timeouts_and_user_agent(token: str) -> None:
    client = build_client(account(timeout_s=7.5), token)
    assert str(client.base_url) == "https://api.example.test/v1/"
    assert client.headers["authorization"] == "Bearer tok-123"
    assert client.headers["user-agent"] == USER_AGENT
    assert client.timeout == httpx.Timeout(7.5, connect=10.0)


async def test_request_json_sends_auth_and_parses(token: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    http = mock_http(handler)
    assert await http.request_json("POST", "images/generations", json_body={"a": 1}) == {"ok": True}
    assert str(seen[0].url) == "https://api.example.test/v1/images/generations"
    assert seen[0].headers["authorization"] == f"Bearer {token}"
    assert seen[0].headers["user-agent"] == USER_AGENT
    assert seen[0].extensions["timeout"] == {
        "connect": 10.0,
        "read": 5.0,
        "write": 5.0,
        "pool": 5.0,
    }


async def test_missing_token_is_provider_not_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DARKROOM_TEST_HTTP_TOKEN", raising=False)
    http = mock_http(lambda request: httpx.Response(200, json={}))
    with pytest.raises(ProviderPermanentError, match="DARKROOM_TEST_HTTP_TOKEN") as caught:
        await http.request_json("GET", "x")
    assert caught.value.code == "provider_not_configured"


@pytest.mark.parametrize(
    ("exception", "code"),
    [
        (httpx.ConnectTimeout("connect timed out"), "timeout"),
        (httpx.ReadTimeout("read timed out"), "timeout"),
        (httpx.PoolTimeout("pool"), "timeout"),
        (httpx.ConnectError("refused"), "connection_error"),
        (httpx.ReadError("connection reset by peer"), "connection_error"),
        (httpx.RemoteProtocolError("server disconnected"), "connection_error"),
        (httpx.WriteError("broken pipe"), "connection_error"),
    ],
)
async def test_transport_errors_are_retryable(token: str, exception: Exception, code: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exception

    with pytest.raises(ProviderRetryableError) as caught:
        await mock_http(handler).request_json("GET", "x")
    assert caught.value.code == code
    assert not isinstance(caught.value, ProviderRateLimited)


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b"", b"<html>ok</html>"])
async def test_2xx_that_is_not_a_json_object_is_malformed(token: str, body: bytes) -> None:
    http = mock_http(lambda request: httpx.Response(200, content=body))
    with pytest.raises(ProviderRetryableError) as caught:
        await http.request_json("GET", "x")
    assert caught.value.code == "malformed_response"


async def test_error_response_is_classified_with_provider_message(token: str) -> None:
    body = {"error": {"message": "Invalid size '7x7'.", "code": "invalid_value"}}
    http = mock_http(lambda request: httpx.Response(400, json=body))
    with pytest.raises(ProviderPermanentError) as caught:
        await http.request_json("POST", "images/generations")
    assert caught.value.code == "invalid_input"
    assert caught.value.message == "prov 400: Invalid size '7x7'."


class EndlessBody(httpx.AsyncByteStream):
    """A body that never ends; counts what the client pulled from it."""

    def __init__(self) -> None:
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        chunk = b"x" * MIB
        while True:
            self.sent += len(chunk)
            yield chunk


async def test_huge_body_is_cut_off_at_the_cap_without_reading_it(token: str) -> None:
    stream = EndlessBody()
    http = mock_http(lambda request: httpx.Response(200, stream=stream))
    with pytest.raises(ProviderRetryableError) as caught:
        await http.request_json("GET", "x")
    assert caught.value.code == "response_too_large"
    assert stream.sent <= 17 * MIB


async def test_declared_length_over_the_cap_is_refused_before_reading(token: str) -> None:
    stream = EndlessBody()
    http = mock_http(
        lambda request: httpx.Response(
            200, stream=stream, headers={"content-length": str(80 * MIB)}
        )
    )
    with pytest.raises(ProviderRetryableError, match="Content-Length") as caught:
        await http.download("https://api.example.test/file.png")
    assert caught.value.code == "response_too_large"
    assert stream.sent == 0


async def test_download_cap(token: str) -> None:
    http = mock_http(lambda request: httpx.Response(200, content=b"y" * 2048))
    assert len(await http.download("https://cdn.example.test/a.png", limit=4096)) == 2048
    with pytest.raises(ProviderRetryableError, match="cap"):
        await http.download("https://cdn.example.test/a.png", limit=1024)


async def test_download_sends_the_token_only_to_the_api_origin(token: str) -> None:
    seen: dict[str, str | None] = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen[request.url.host] = request.headers.get("authorization")
        return httpx.Response(200, content=b"img")

    # A client that carries the token by default, as build_client makes it.
    client = httpx.AsyncClient(
        transport=httpx.MockTransport(handler), headers={"Authorization": f"Bearer {token}"}
    )
    http = ProviderHTTP("prov", account(), client)
    await http.download("https://cdn.example.test/out.png")
    await http.download("https://api.example.test/v1/files/out.png")
    assert seen == {"cdn.example.test": None, "api.example.test": f"Bearer {token}"}


async def test_download_follows_redirects(token: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/a":
            return httpx.Response(302, headers={"location": "https://cdn.example.test/b"})
        return httpx.Response(200, content=b"final")

    assert await mock_http(handler).download("https://cdn.example.test/a") == b"final"


@pytest.mark.parametrize("url", ["ftp://x/y.png", "file:///etc/passwd", "not a url at all"])
async def test_download_refuses_non_http_urls(token: str, url: str) -> None:
    http = mock_http(lambda request: httpx.Response(200, content=b""))
    with pytest.raises(ProviderRetryableError) as caught:
        await http.download(url)
    assert caught.value.code == "malformed_response"
