"""An openai-kind account with OAuth client credentials (ERNIE-Image on Baidu AI Cloud),
built from its configuration, against the simulator's token server and OpenAI API."""

from __future__ import annotations

import textwrap
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import pytest
from arq.connections import ArqRedis

from service.providers import oauth
from service.providers.base import (
    GenerationRequest,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.providers.catalogue import account_config, build_provider
from service.providers.config import parse_config
from service.providers.http import may_have_reached_provider
from service.providers.kinds import ProviderDeps
from service.providers.oauth import OAuthClientCredentials
from service.providers.openai import OpenAIConfig, OpenAIImagesProvider
from simulators import SimulatorHandle
from simulators.oauth import TokenServerHandle
from tests.providers import oauth_fixtures
from tests.providers.oauth_fixtures import enabled_token_server

if TYPE_CHECKING:
    from tests.conftest import ServiceUrls

ISSUE_BLOCK = """
providers:
  ernie:    {kind: openai, base_url: https://qianfan.baidubce.com/v2,
             auth: {type: oauth_client_credentials, token_url: https://aip.baidubce.com/oauth/2.0/token,
                    client_id_env: BAIDU_API_KEY, client_secret_env: BAIDU_SECRET_KEY}}
"""
ID_ENV, SECRET_ENV = "DARKROOM_TEST_ERNIE_ID", "DARKROOM_TEST_ERNIE_SECRET"

sim_url = oauth_fixtures.sim_url


@pytest.fixture(autouse=True)
def credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ID_ENV, "sim-client-id")
    monkeypatch.setenv(SECRET_ENV, "sim-client-secret")


@pytest.fixture
async def tokens(sim_url: str) -> TokenServerHandle:
    await SimulatorHandle(sim_url).reset()
    return await enabled_token_server(sim_url)


@pytest.fixture
async def redis(services: ServiceUrls) -> AsyncIterator[ArqRedis]:
    client = ArqRedis.from_url(services.redis_url)
    yield client
    keys = [key async for key in client.scan_iter(match=f"{oauth.KEY_PREFIX}*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


@pytest.fixture
async def providers(
    tokens: TokenServerHandle, redis: ArqRedis
) -> AsyncIterator[list[OpenAIImagesProvider]]:
    """Two workers' providers for one account (named anew for each test)."""
    name = f"ernie-{uuid.uuid4().hex[:8]}"
    config = account_config(
        {
            "kind": "openai",
            "base_url": tokens.url + "/v1",
            "timeout_s": 5,
            "auth": {
                "type": "oauth_client_credentials",
                "token_url": tokens.token_url,
                "client_id_env": ID_ENV,
                "client_secret_env": SECRET_ENV,
            },
        }
    )
    built = [build_provider(name, config, ProviderDeps(redis=redis)) for _ in range(2)]
    assert all(isinstance(provider, OpenAIImagesProvider) for provider in built)
    yield [p for p in built if isinstance(p, OpenAIImagesProvider)]
    for provider in built:
        await provider.aclose()


def request(**overrides: Any) -> GenerationRequest:
    values: dict[str, Any] = {
        "prompt": "a paper lantern",
        "model_ref": "irag-1.0",
        "width": 64,
        "height": 64,
        "format": "png",
        "seed": 1,
    }
    return GenerationRequest(**(values | overrides))


def test_the_ernie_block_of_the_issue_is_an_openai_account_with_oauth() -> None:
    config = parse_config(textwrap.dedent(ISSUE_BLOCK), source="issue").providers["ernie"]

    assert isinstance(config, OpenAIConfig)
    assert config.auth == OAuthClientCredentials(
        type="oauth_client_credentials",
        token_url="https://aip.baidubce.com/oauth/2.0/token",
        client_id_env="BAIDU_API_KEY",
        client_secret_env="BAIDU_SECRET_KEY",
    )
    assert config.token_env is None


async def test_workers_generate_with_one_shared_token(
    tokens: TokenServerHandle, providers: list[OpenAIImagesProvider]
) -> None:
    for provider in providers * 3:
        output = await provider.generate(request())
        assert (output.format, output.width, output.height) == ("png", 64, 64)

    stats = await tokens.stats()
    assert (stats["fetches"], stats["rejected_tokens"]) == (1, 0)


async def test_a_revoked_token_is_refreshed_and_the_image_still_made(
    tokens: TokenServerHandle, providers: list[OpenAIImagesProvider]
) -> None:
    first, second = providers
    await first.generate(request())
    await tokens.revoke()

    await second.generate(request())
    await first.generate(request())

    stats = await tokens.stats()
    assert (stats["fetches"], stats["rejected_tokens"]) == (2, 1)


async def test_a_token_the_api_never_takes_fails_the_job_naming_the_account(
    tokens: TokenServerHandle, providers: list[OpenAIImagesProvider]
) -> None:
    await tokens.configure(expires_in=0)
    provider = providers[0]

    with pytest.raises(ProviderPermanentError) as caught:
        await provider.generate(request())

    assert caught.value.code == "provider_auth_failed"
    assert caught.value.message.startswith(f"{provider.name}: ")
    assert (await tokens.stats())["fetches"] == 2


async def test_missing_client_credentials_are_reported_before_any_request(
    monkeypatch: pytest.MonkeyPatch,
    tokens: TokenServerHandle,
    providers: list[OpenAIImagesProvider],
) -> None:
    monkeypatch.delenv(ID_ENV)

    with pytest.raises(ProviderPermanentError) as caught:
        await providers[0].generate(request())

    assert caught.value.code == "provider_not_configured"
    assert ID_ENV in caught.value.message
    assert (await tokens.stats())["fetches"] == 0
    assert (await SimulatorHandle(tokens.url).stats())["requests_total"] == 0


async def test_a_token_endpoint_failure_is_known_never_to_have_reached_the_api(
    tokens: TokenServerHandle, providers: list[OpenAIImagesProvider]
) -> None:
    await tokens.configure(faults=["error_503"])

    with pytest.raises(ProviderRetryableError) as caught:
        await providers[0].generate(request())

    assert caught.value.http_status == 503
    assert not may_have_reached_provider(caught.value)  # nothing can have been paid for
    assert (await SimulatorHandle(tokens.url).stats())["creation_requests"] == 0
