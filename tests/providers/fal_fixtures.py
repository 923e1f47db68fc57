"""One fal simulator per test module (it takes a second to start on a busy machine),
reset and reconfigured before each test; a fresh provider per test."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from service.providers.fal import FalConfig, FalProvider
from simulators.fal import FalHandle, FalSim, FalSimConfig, create_fal_app
from simulators.runner import serving_in_thread

KEY_ENV = "DARKROOM_TEST_FAL_KEY"
SIM_CONFIG = FalSimConfig(run_s=0.02, concurrency=2)


@pytest.fixture(scope="module")
def fal_server() -> Iterator[FalHandle]:
    sim = FalSim(SIM_CONFIG)
    with serving_in_thread(create_fal_app(sim=sim)) as url:
        yield FalHandle(url, sim)


@pytest.fixture
async def sim(fal_server: FalHandle) -> FalHandle:
    await fal_server.call("POST", "/_sim/reset")
    await fal_server.configure(**SIM_CONFIG.model_dump())
    return fal_server


@pytest.fixture(autouse=True)
def key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sim-fal-key")


def config(sim: FalHandle, **overrides: Any) -> FalConfig:
    values: dict[str, Any] = {
        "kind": "fal",
        "base_url": sim.url,
        "token_env": KEY_ENV,
        "webhook_jwks_url": sim.jwks_url,
        "timeout_s": 5,
    }
    return FalConfig.model_validate(values | overrides)


@pytest.fixture
async def provider(sim: FalHandle) -> AsyncIterator[FalProvider]:
    provider = FalProvider("fal", config(sim))
    yield provider
    await provider.aclose()
