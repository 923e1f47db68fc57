"""The provider simulator's token server, for the OAuth test modules."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from simulators import running_simulator
from simulators.oauth import TokenServerConfig, TokenServerHandle


@pytest.fixture(scope="module")
def sim_url() -> Iterator[str]:
    """One simulator for the module (reset before each test): starting one takes a while."""
    with running_simulator() as sim:
        yield sim.url


async def enabled_token_server(url: str) -> TokenServerHandle:
    """The simulator's token server, reset to its defaults and turned on."""
    server = TokenServerHandle(url)
    await server.reset()
    await server.configure(**TokenServerConfig().model_dump() | {"enabled": True})
    return server
