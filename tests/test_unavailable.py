"""A lost Postgres or Redis answers 503 with Retry-After, never 500: the caller retries
and nothing that was accepted is lost."""

from __future__ import annotations

import dataclasses

import httpx
from sqlalchemy.exc import OperationalError

from service.app import create_app
from service.db import create_engine, create_sessionmaker
from service.kit.errors import dependency_unavailable
from service.state import State
from tests.conftest import Caller


async def test_a_database_that_refuses_connections_gives_503(state: State, caller: Caller) -> None:
    # Port 9 (discard) on loopback: nothing listens, the connection is refused.
    engine = create_engine("postgresql+asyncpg://postgres@127.0.0.1:9/darkroom", pool_size=1)
    down = dataclasses.replace(state, engine=engine, sessionmaker=create_sessionmaker(engine))
    app = create_app(state.settings)
    app.state.darkroom = down
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            for method, path in [("GET", "/v1/batches"), ("POST", "/v1/batches")]:
                response = await client.request(
                    method, path, headers=caller.headers, json={"jobs": [{"prompt": "x"}]}
                )
                assert response.status_code == 503, response.text
                assert response.headers["retry-after"] == "5"
                assert response.json()["error"]["code"] == "unavailable"
    finally:
        await engine.dispose()


def test_bugs_are_not_mistaken_for_outages() -> None:
    assert not dependency_unavailable(ValueError("a bug"))
    assert not dependency_unavailable(KeyError("x"))
    assert dependency_unavailable(ConnectionRefusedError(111, "refused"))
    wrapped = OperationalError("SELECT 1", {}, ConnectionResetError())
    assert dependency_unavailable(wrapped)
    outer = RuntimeError("while committing")
    outer.__cause__ = ConnectionResetError("peer reset")
    assert dependency_unavailable(outer)
