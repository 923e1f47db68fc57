"""Short, real connection attempts: a server "answers" only if it runs a query or a PING."""

from __future__ import annotations

import asyncio
import concurrent.futures
import socket
from collections.abc import Coroutine
from typing import Any, TypeVar

import redis
import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.pool import NullPool

PROBE_TIMEOUT_S = 1.0
# Never handed out for an embedded server: a later `apt install postgresql redis` must not collide.
RESERVED_PORTS = frozenset({5432, 6379})
_UNDEFINED_DATABASE = "3D000"

T = TypeVar("T")


def run_sync(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion, also when called from inside a running event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, coroutine).result()


def asyncpg_url(database_url: str, *, database: str | None = None) -> URL:
    url = make_url(database_url).set(drivername="postgresql+asyncpg")
    return url if database is None else url.set(database=database)


def postgres_engine(url: URL, *, autocommit: bool = False) -> AsyncEngine:
    options: dict[str, Any] = {"poolclass": NullPool, "connect_args": {"timeout": PROBE_TIMEOUT_S}}
    if autocommit:
        options["isolation_level"] = "AUTOCOMMIT"
    return create_async_engine(url, **options)


def sqlstate(error: DBAPIError) -> str | None:
    code = getattr(error.orig, "sqlstate", None) or getattr(error.orig, "pgcode", None)
    return code if isinstance(code, str) else None


async def _postgres_answers(url: URL) -> bool:
    engine = postgres_engine(url)
    try:
        async with asyncio.timeout(PROBE_TIMEOUT_S * 2), engine.connect() as connection:
            await connection.execute(sa.text("SELECT 1"))
        return True
    except DBAPIError as error:
        # The server answered; only the database is missing, and we create it next.
        return sqlstate(error) == _UNDEFINED_DATABASE
    except (OSError, TimeoutError):
        return False
    finally:
        await engine.dispose()


def postgres_answers(database_url: str) -> bool:
    return run_sync(_postgres_answers(asyncpg_url(database_url)))


def redis_answers(redis_url: str) -> bool:
    client = redis.Redis.from_url(
        redis_url, socket_connect_timeout=PROBE_TIMEOUT_S, socket_timeout=PROBE_TIMEOUT_S
    )
    try:
        return bool(client.ping())
    except (redis.RedisError, OSError):
        return False
    finally:
        client.close()


def free_port() -> int:
    """A port the OS says is free on 127.0.0.1, never one of the well-known defaults."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
            probe.bind(("127.0.0.1", 0))
            port: int = probe.getsockname()[1]
        if port not in RESERVED_PORTS:
            return port


def port_is_listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(PROBE_TIMEOUT_S)
        return probe.connect_ex((host, port)) == 0
