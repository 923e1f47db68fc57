"""OAuth client-credentials tokens (service.providers.oauth) against the simulator's
Baidu-style token server, shared through the real Redis."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable, MutableMapping
from typing import TYPE_CHECKING, Any

import httpx
import pytest
import redis.asyncio as aioredis
import structlog
from structlog.testing import LogCapture

from service.providers import oauth
from service.providers.base import (
    ProviderError,
    ProviderPermanentError,
    ProviderRateLimited,
    ProviderRetryableError,
)
from service.providers.oauth import OAuthClientCredentials, TokenSource, with_token
from simulators import SimulatorHandle
from simulators.oauth import TokenServerHandle
from tests.providers import oauth_fixtures
from tests.providers.oauth_fixtures import enabled_token_server

if TYPE_CHECKING:
    from tests.conftest import ServiceUrls

ID_ENV = "DARKROOM_TEST_OAUTH_CLIENT_ID"
SECRET_ENV = "DARKROOM_TEST_OAUTH_CLIENT_SECRET"
CLIENT_ID = "sim-client-id"
SECRET = "sim-client-secret"

sim_url = oauth_fixtures.sim_url


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ID_ENV, CLIENT_ID)
    monkeypatch.setenv(SECRET_ENV, SECRET)


@pytest.fixture
async def sim(sim_url: str) -> SimulatorHandle:
    sim = SimulatorHandle(sim_url)
    await sim.reset()
    return sim


@pytest.fixture
async def tokens(sim: SimulatorHandle) -> TokenServerHandle:
    return await enabled_token_server(sim.url)


@pytest.fixture
async def redis(services: ServiceUrls) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(services.redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{oauth.KEY_PREFIX}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(verify=False) as client:  # plain HTTP to the simulator
        yield client


@pytest.fixture
def account() -> str:
    return f"ernie-{uuid.uuid4().hex[:8]}"


def auth(token_url: str, **overrides: Any) -> OAuthClientCredentials:
    values: dict[str, Any] = {
        "type": "oauth_client_credentials",
        "token_url": token_url,
        "client_id_env": ID_ENV,
        "client_secret_env": SECRET_ENV,
    }
    return OAuthClientCredentials.model_validate(values | overrides)


Sources = Callable[..., TokenSource]


@pytest.fixture
def sources(
    account: str, tokens: TokenServerHandle, redis: aioredis.Redis, http: httpx.AsyncClient
) -> Sources:
    """TokenSource(...) for the account at the simulator: sharing through Redis unless
    `shared=False`, `auth` overrides the auth block, the rest goes to TokenSource."""

    def make(
        *, shared: bool = True, auth_block: dict[str, Any] | None = None, **kwargs: Any
    ) -> TokenSource:
        config = auth(tokens.token_url, **(auth_block or {}))
        return TokenSource(account, config, redis=redis if shared else None, client=http, **kwargs)

    return make


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def generate(http: httpx.AsyncClient, sim: SimulatorHandle) -> Any:
    """One image request to the simulator's OpenAI API with a bearer token, its errors
    classified by status as ProviderHTTP classifies them."""

    async def send(token: str) -> dict[str, Any]:
        response = await http.post(
            sim.url + "/v1/images/generations",
            headers={"authorization": f"Bearer {token}"},
            json={"model": "ernie-image", "prompt": "a lantern", "size": "64x64"},
        )
        if response.status_code == 401:
            message = response.json()["error"]["message"]
            raise ProviderPermanentError("auth", message, http_status=401)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    return send


async def test_one_token_for_many_requests_shared_by_two_sources_through_redis(
    sim: SimulatorHandle,
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    http: httpx.AsyncClient,
    account: str,
    sources: Sources,
) -> None:
    await tokens.configure(latency_s=0.2)  # the fetches of both overlap
    first = sources()
    second = sources()  # another worker process's

    seen = await asyncio.gather(*(source.token() for source in (first, second) * 10))

    assert len(set(seen)) == 1
    for source in (first, second):
        answer = await with_token(account, source, generate(http, sim))
        assert answer["data"]
    stats = await tokens.stats()
    assert (stats["fetches"], stats["rejected_tokens"]) == (1, 0)


async def test_refreshed_before_it_expires(
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    account: str,
    sources: Sources,
) -> None:
    await tokens.configure(expires_in=1000)  # refresh margin: min(300, 1000 / 5) = 200 s
    clock = Clock()
    source = sources(clock=clock)
    old = await source.token()

    clock.now += 799
    assert await source.token() == old
    clock.now += 2  # 801 s into a 1000 s life
    fresh = await source.token()

    assert fresh != old
    assert (await tokens.stats())["fetches"] == 2


async def test_a_refusal_refreshes_once_and_the_request_is_retried(
    sim: SimulatorHandle,
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    http: httpx.AsyncClient,
    account: str,
    sources: Sources,
) -> None:
    first = sources()
    second = sources()
    revoked = await first.token()
    assert await second.token() == revoked
    await tokens.revoke(revoked)  # a 401 in mid-life

    assert (await with_token(account, first, generate(http, sim)))["data"]
    # Another worker's request was refused the same token meanwhile: its invalidation
    # finds the token already replaced, and causes no second fetch.
    await second.invalidate(revoked)
    fresh = await second.token()

    assert fresh != revoked
    assert fresh == await first.token()
    assert (await with_token(account, second, generate(http, sim)))["data"]
    stats = await tokens.stats()
    assert (stats["fetches"], stats["rejected_tokens"]) == (2, 1)


async def test_a_second_refusal_is_permanent_and_names_the_account(
    sim: SimulatorHandle,
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    http: httpx.AsyncClient,
    account: str,
    sources: Sources,
) -> None:
    await tokens.configure(expires_in=0)  # the API refuses every token it issues
    source = sources()

    with pytest.raises(ProviderPermanentError) as caught:
        await with_token(account, source, generate(http, sim))

    assert caught.value.code == "provider_auth_failed"
    assert account in caught.value.message
    assert "Access token expired" in caught.value.message
    assert SECRET not in caught.value.message
    assert (await tokens.stats())["fetches"] == 2  # the first token, and one refresh


@pytest.mark.parametrize(
    ("fault", "kind", "code"),
    [
        ("error_500", ProviderRetryableError, "server_error"),
        ("error_502", ProviderRetryableError, "server_error"),
        ("error_503", ProviderRetryableError, "server_error"),
        ("temporarily_unavailable", ProviderRetryableError, "server_error"),
        ("rate_limited", ProviderRateLimited, "rate_limited"),
        ("reset", ProviderRetryableError, "connection_error"),
        ("malformed_json", ProviderRetryableError, "malformed_response"),
        ("no_access_token", ProviderRetryableError, "malformed_response"),
        ("hang", ProviderRetryableError, "timeout"),
    ],
)
async def test_transient_token_endpoint_errors_are_retryable(
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    account: str,
    fault: str,
    kind: type[ProviderError],
    code: str,
    sources: Sources,
) -> None:
    await tokens.configure(faults=[fault], hang_s=10)
    source = sources(timeout_s=0.5)

    with pytest.raises(ProviderError) as caught:
        await source.token()

    assert type(caught.value) is kind
    assert caught.value.code == code
    assert account in caught.value.message
    if fault == "rate_limited":
        assert isinstance(caught.value, ProviderRateLimited)
        assert caught.value.retry_after_s == 2
    assert await source.token()  # the next attempt gets a token


@pytest.mark.parametrize(
    ("setting", "description"),
    [
        ("client_secret", "Client authentication failed"),
        ("client_id", "unknown client id"),
    ],
)
async def test_refused_client_credentials_are_permanent_with_the_description(
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    account: str,
    setting: str,
    description: str,
    sources: Sources,
) -> None:
    await tokens.configure(**{setting: "something-else"})
    source = sources()

    with pytest.raises(ProviderPermanentError) as caught:
        await source.token()

    error = caught.value
    assert (error.code, error.http_status) == ("provider_auth_failed", 401)
    assert f"invalid_client: {description}" in error.message
    assert account in error.message
    assert SECRET not in error.message
    assert CLIENT_ID not in error.message


async def test_workers_waiting_on_a_failed_fetch_share_its_error(
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    account: str,
    sources: Sources,
) -> None:
    await tokens.configure(client_secret="rotated", latency_s=0.2)
    workers = [sources() for _ in range(3)]

    results = await asyncio.gather(*(w.token() for w in workers), return_exceptions=True)

    assert all(isinstance(r, ProviderPermanentError) for r in results)
    assert {r.code for r in results if isinstance(r, ProviderError)} == {"provider_auth_failed"}
    assert (await tokens.stats())["fetches"] == 1


async def test_a_dead_workers_lock_is_waited_out(
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    account: str,
    sources: Sources,
) -> None:
    source = sources()
    await redis.set(f"{source._key()}:lock", "a-worker-that-died", px=300)

    assert await source.token()

    assert (await tokens.stats())["fetches"] == 1


async def test_missing_credentials_name_the_variables(
    monkeypatch: pytest.MonkeyPatch,
    tokens: TokenServerHandle,
    account: str,
    sources: Sources,
) -> None:
    monkeypatch.delenv(SECRET_ENV)
    source = sources(shared=False)

    with pytest.raises(ProviderPermanentError) as caught:
        await source.token()

    assert caught.value.code == "provider_not_configured"
    assert SECRET_ENV in caught.value.message
    assert (await tokens.stats())["fetches"] == 0


async def test_without_redis_the_token_is_kept_in_the_process(
    tokens: TokenServerHandle,
    account: str,
    sources: Sources,
) -> None:
    source = sources(shared=False)
    first = await asyncio.gather(*(source.token() for _ in range(5)))
    assert len(set(first)) == 1
    await source.invalidate(first[0])

    assert await source.token() != first[0]
    assert (await tokens.stats())["fetches"] == 2


@pytest.mark.parametrize("client_auth", ["query", "form", "basic"])
async def test_each_way_of_sending_the_credentials_gets_a_token(
    tokens: TokenServerHandle,
    account: str,
    client_auth: str,
    sources: Sources,
) -> None:
    source = sources(auth_block={"client_auth": client_auth, "scope": "x"})
    assert await source.token()
    assert (await tokens.stats())["issued"] == 1


@pytest.fixture
def oauth_log(monkeypatch: pytest.MonkeyPatch) -> list[MutableMapping[str, Any]]:
    """structlog caches its loggers, so the module's logger is swapped for a capturing one."""
    capture = LogCapture()
    monkeypatch.setattr(oauth, "log", structlog.wrap_logger(None, processors=[capture]))
    return capture.entries


async def test_the_secret_never_reaches_the_log_or_an_error(
    sim: SimulatorHandle,
    tokens: TokenServerHandle,
    redis: aioredis.Redis,
    http: httpx.AsyncClient,
    account: str,
    oauth_log: list[MutableMapping[str, Any]],
    caplog: pytest.LogCaptureFixture,
    sources: Sources,
) -> None:
    caplog.set_level(logging.DEBUG)
    source = sources()
    errors: list[str] = []
    await with_token(account, source, generate(http, sim))
    await tokens.revoke()
    await with_token(account, source, generate(http, sim))  # a 401, a refresh
    await tokens.configure(expires_in=0)
    await source.invalidate(await source.token())
    for fault in ("error_500", "reset"):
        await tokens.configure(faults=[fault])
        with pytest.raises(ProviderError) as caught:
            await source.token()
        errors.append(repr(caught.value) + caught.value.message)
    with pytest.raises(ProviderPermanentError) as refused:
        await with_token(account, source, generate(http, sim))
    errors.append(refused.value.message)

    logged = caplog.text + repr(oauth_log)
    assert "provider_token_fetched" in logged
    assert "HTTP Request: POST" in caplog.text  # httpx's own line, URL without its query
    for text in (logged, *errors):
        assert SECRET not in text
        assert CLIENT_ID not in text
