"""What the API process and the worker processes hold for their lifetime."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import httpx
from arq.connections import ArqRedis, RedisSettings, create_pool
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from service.config import Settings, StorageKind
from service.db import create_engine, create_sessionmaker
from service.dispatch.accounts import Dispatch
from service.kit.ssrf import guarded_client
from service.providers.config import load_config
from service.providers.kinds import ProviderDeps
from service.providers.registry import ProviderRegistry, build_registry
from service.storage.base import Storage
from service.storage.local import LocalStorage


@dataclass
class State:
    settings: Settings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    redis: ArqRedis
    http: httpx.AsyncClient
    registry: ProviderRegistry
    storage: Storage
    dispatch: Dispatch


def redis_settings(settings: Settings) -> RedisSettings:
    """Short connect timeout and few retries: a Redis that is down must surface as a
    503 or a worker reconnect, not as a request hanging for minutes."""
    return dataclasses.replace(
        RedisSettings.from_dsn(settings.redis_url), conn_timeout=2, conn_retries=1
    )


def build_storage(settings: Settings) -> Storage:
    """The configured output storage. Nothing is contacted here: see check_storage."""
    if settings.storage is StorageKind.s3:
        from service.storage.s3 import S3Storage  # its native library loads only when used

        return S3Storage.from_settings(settings)
    return LocalStorage(settings.storage_dir)


async def check_storage(settings: Settings) -> None:
    """Once, when the API or a worker starts: a missing or unreachable bucket is a
    StorageConfigError naming it, before any job is taken."""
    await build_storage(settings).check()


async def build_state(settings: Settings, *, pool_size: int = 10) -> State:
    engine = create_engine(settings.database_url, pool_size=pool_size)
    redis = await create_pool(
        redis_settings(settings), default_queue_name=settings.queue_name, retry=0
    )
    # Outbound webhooks and write-backs go to URLs callers chose: SSRF-guarded.
    http = guarded_client(
        settings,
        timeout=httpx.Timeout(settings.webhook_timeout_s),
        headers={"user-agent": "Darkroom-Webhooks/0.1"},
    )
    registry = build_registry(
        load_config(settings.config), ProviderDeps(redis=redis, settings=settings)
    )
    return State(
        settings=settings,
        engine=engine,
        sessionmaker=create_sessionmaker(engine),
        redis=redis,
        http=http,
        registry=registry,
        storage=build_storage(settings),
        dispatch=Dispatch(redis, registry),
    )


async def close_state(state: State) -> None:
    from service.events.publish import settle_counts

    await settle_counts(state)
    await state.registry.aclose()
    await state.storage.aclose()
    await state.http.aclose()
    await state.redis.aclose()
    await state.engine.dispose()
