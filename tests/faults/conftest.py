"""Fixtures of the fault tests: their own Postgres and Redis (for the whole package, so
that a test may stop them), and a fresh Darkroom stack per test."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from service.devenv import create_database_if_missing
from service.devenv.probes import free_port
from service.migrate import upgrade_to_head
from tests.conftest import empty_tables
from tests.faults.servers import PostgresServer, RedisServer
from tests.faults.stack import Servers, Stack


@pytest.fixture(scope="package")
def servers() -> Iterator[Servers]:
    root = Path(tempfile.mkdtemp(prefix="darkroom-faults-"))
    root.chmod(0o711)  # Postgres runs as another user when we are root
    postgres = PostgresServer(root, free_port())
    redis = RedisServer(root, free_port())
    try:
        postgres.init()
        postgres.start()
        redis.start()
        database_url = postgres.url("darkroom")
        create_database_if_missing(database_url)
        upgrade_to_head(database_url)
        yield Servers(postgres, redis, database_url)
    finally:
        redis.stop()
        postgres.stop()
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
async def stack(servers: Servers, tmp_path: Path) -> AsyncIterator[Stack]:
    # A test that failed half-way through an outage may have left a server stopped.
    if not servers.postgres.running:
        servers.postgres.start()
    if not servers.redis.running:
        servers.redis.start()
    stack = Stack(servers, tmp_path)
    try:
        await stack.redis.flushall()
        async with stack.db.engine.begin() as connection:
            await empty_tables(connection)
        yield stack
    finally:
        await stack.close()
