"""Fixtures on a real Postgres and a real Redis, found or started like `darkroom up` does.

Each run gets its own database (created, then migrated by Alembic) and its own Redis
db number, so concurrent runs never collide; tables and keys are emptied between tests.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncConnection

from service.app import create_app
from service.auth.service import create_key
from service.config import Settings
from service.db import session_scope
from service.devenv import RunningServices, drop_database, ensure_services
from service.devenv.redis_dbs import claim_redis_db, release_redis_db, with_db
from service.events.publish import settle_counts
from service.migrate import upgrade_to_head
from service.models import Base
from service.state import State, build_state, close_state

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ServiceUrls:
    database_url: str
    redis_url: str


@pytest.fixture(scope="session")
def services() -> Iterator[ServiceUrls]:
    settings = Settings()
    run_id = uuid.uuid4().hex[:10]
    running: RunningServices = ensure_services(
        database_url=os.environ.get("DARKROOM_DATABASE_URL"),
        redis_url=os.environ.get("DARKROOM_REDIS_URL"),
        probe_local_defaults=settings.local_defaults,
        data_dir=ROOT / ".data" / "test",
        database_name=f"darkroom_test_{run_id}",
    )
    with running:
        number = claim_redis_db(running.redis_url, run_id)
        upgrade_to_head(running.database_url)
        try:
            yield ServiceUrls(running.database_url, with_db(running.redis_url, number))
        finally:
            drop_database(running.database_url)
            release_redis_db(running.redis_url, number, run_id)


@pytest.fixture
def settings(services: ServiceUrls, tmp_path: Path) -> Settings:
    return Settings(
        database_url=services.database_url,
        redis_url=services.redis_url,
        storage_dir=tmp_path / "outputs",
        data_dir=tmp_path / "data",
        public_url="http://testserver",
        reconcile_stale_after_s=30,
        webhook_schedule_scale=0.01,
    )


@pytest.fixture
def quick_retries(settings: Settings) -> None:
    """A failed attempt's retry waits up to 0.2 s (doubling) instead of 2 s: for tests that
    retry jobs several times and wait for the end anyway. Not the default: a test that
    looks at a job waiting out its backoff needs the backoff to outlast its look."""
    settings.job_retry_base_s = 0.2


@pytest.fixture
async def state(settings: Settings) -> AsyncIterator[State]:
    state = await build_state(settings)
    await state.redis.flushdb()
    try:
        yield state
    finally:
        await settle_counts(state)  # its query would race the emptying
        async with state.engine.begin() as connection:
            await empty_tables(connection)
        await state.redis.flushdb()
        await close_state(state)


async def empty_tables(connection: AsyncConnection) -> None:
    """Every table emptied, children first. DELETE rather than TRUNCATE: on tables this
    small a DELETE takes a few milliseconds, and TRUNCATE's new files 70 to 300 (before
    every test, that was minutes of a run)."""
    for table in reversed(Base.metadata.sorted_tables):
        await connection.execute(table.delete())


@pytest.fixture
async def client(state: State) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(state.settings)
    app.state.darkroom = state  # the lifespan is bypassed: tests share the fixture's state
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


@dataclass(frozen=True)
class Caller:
    key: str
    webhook_secret: str
    api_key_id: uuid.UUID

    @property
    def headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self.key}"}


async def make_caller(state: State, name: str = "tests") -> Caller:
    async with session_scope(state.sessionmaker) as session:
        created = await create_key(session, name, pepper=state.settings.secret_key)
    return Caller(created.key, created.webhook_secret, created.api_key.id)


@pytest.fixture
async def caller(state: State) -> Caller:
    return await make_caller(state)


async def submit(client: httpx.AsyncClient, caller: Caller, body: dict[str, object]) -> str:
    """POST a batch that must be accepted; returns its id."""
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])
