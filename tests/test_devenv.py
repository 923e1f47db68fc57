"""devenv against real servers: the machine's own, and embedded ones started in a tmp dir."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from service.devenv import RunningServices, drop_database, ensure_services
from service.devenv.probes import free_port, port_is_listening, run_sync
from service.devenv.processes import pid_alive
from tests.embedded_tmp import embedded_tmp_dir

LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/0"
KEEP_A_ROW = ("CREATE TABLE kept (id int)", "INSERT INTO kept VALUES (7) RETURNING id")


def _fresh_database_name() -> str:
    return f"darkroom_devenv_{uuid.uuid4().hex[:12]}"


async def _scalar(database_url: str, *queries: str) -> object:
    """Run the queries in one transaction; the result of the last."""
    engine = create_async_engine(database_url, poolclass=NullPool)
    try:
        async with engine.begin() as connection:
            *statements, query = queries
            for statement in statements:
                await connection.execute(sa.text(statement))
            return await connection.scalar(sa.text(query))
    finally:
        await engine.dispose()


def scalar(database_url: str, *queries: str) -> object:
    return run_sync(_scalar(database_url, *queries))


def database_exists(database_url: str, name: str) -> bool:
    maintenance = sa.make_url(database_url).set(database="postgres").render_as_string(False)
    found = scalar(maintenance, f"SELECT count(*) FROM pg_database WHERE datname = '{name}'")
    return found == 1


def redis_ping(redis_url: str) -> bool:
    with redis.Redis.from_url(redis_url, socket_connect_timeout=2) as client:
        return bool(client.ping())


@pytest.fixture
def data_parent() -> Iterator[Path]:
    """Where embedded servers keep their data: see tests/embedded_tmp.py for why not tmp_path."""
    with embedded_tmp_dir() as path:
        yield path


@pytest.fixture
def services_to_stop() -> Iterator[list[RunningServices]]:
    started: list[RunningServices] = []
    yield started
    for services in started:
        services.stop()


async def test_local_defaults_are_used_and_a_fresh_database_created(tmp_path: Path) -> None:
    """Called from inside an event loop on purpose, as an async fixture would."""
    name = _fresh_database_name()
    with ensure_services(
        database_url=None,
        redis_url=None,
        probe_local_defaults=True,
        data_dir=tmp_path,
        database_name=name,
    ) as services:
        assert services.embedded == []
        assert services.database_url == f"postgresql+asyncpg://postgres@127.0.0.1:5432/{name}"
        assert services.redis_url == LOCAL_REDIS
        assert await _scalar(services.database_url, "SELECT current_database()") == name
        assert redis_ping(services.redis_url)
        drop_database(services.database_url)
        assert not database_exists(services.database_url, name)
    assert list(tmp_path.iterdir()) == []  # nothing embedded was prepared


def test_an_explicit_url_that_answers_wins(tmp_path: Path) -> None:
    name = _fresh_database_name()
    services = ensure_services(
        database_url=LOCAL_POSTGRES,
        redis_url="redis://127.0.0.1:6379/3",
        probe_local_defaults=False,
        data_dir=tmp_path,
        database_name=name,
    )
    try:
        assert services.embedded == []
        assert services.database_url.endswith(f"@127.0.0.1:5432/{name}")
        assert services.redis_url == "redis://127.0.0.1:6379/3"
        assert database_exists(services.database_url, name)
    finally:
        drop_database(services.database_url)
        services.stop()


def _start_embedded(data_dir: Path, name: str) -> RunningServices:
    closed_postgres, closed_redis = free_port(), free_port()
    return ensure_services(
        database_url=f"postgresql+asyncpg://postgres@127.0.0.1:{closed_postgres}/{name}",
        redis_url=f"redis://127.0.0.1:{closed_redis}/0",
        probe_local_defaults=False,
        data_dir=data_dir,
        database_name=name,
    )


def _ports(services: RunningServices) -> tuple[int, int]:
    postgres_port = sa.make_url(services.database_url).port
    redis_port = sa.make_url(services.redis_url).port
    assert postgres_port is not None
    assert redis_port is not None
    return postgres_port, redis_port


def test_embedded_servers_start_answer_and_stop(
    data_parent: Path, services_to_stop: list[RunningServices]
) -> None:
    name = _fresh_database_name()
    services = _start_embedded(data_parent / ".data", name)
    services_to_stop.append(services)

    assert services.embedded == ["postgres", "redis"]
    postgres_port, redis_port = _ports(services)
    assert postgres_port != 5432
    assert redis_port != 6379
    assert scalar(services.database_url, "SELECT current_database()") == name
    assert redis_ping(services.redis_url)
    with redis.Redis.from_url(services.redis_url) as client:
        assert client.config_get("save") == {"save": ""}
    pids = [server.pid for server in services._servers]

    services.stop()
    services.stop()  # idempotent

    assert not port_is_listening(postgres_port)
    assert not port_is_listening(redis_port)
    assert not any(pid_alive(pid) for pid in pids)


def test_embedded_postgres_reuses_its_data_and_survives_a_stale_pid_file(
    data_parent: Path, services_to_stop: list[RunningServices]
) -> None:
    data_dir = data_parent / ".data"
    name = _fresh_database_name()
    with _start_embedded(data_dir, name) as first:
        scalar(first.database_url, *KEEP_A_ROW)
    initialised_at = (data_dir / "postgres" / "PG_VERSION").stat().st_mtime_ns
    # As if the server had been killed: a pid file naming a process that no longer exists.
    (data_dir / "postgres" / "postmaster.pid").write_text("2147483646\n")

    second = _start_embedded(data_dir, name)
    services_to_stop.append(second)

    assert (data_dir / "postgres" / "PG_VERSION").stat().st_mtime_ns == initialised_at
    assert scalar(second.database_url, "SELECT id FROM kept") == 7


def test_a_second_user_shares_the_embedded_servers_and_the_last_one_stops_them(
    data_parent: Path, services_to_stop: list[RunningServices]
) -> None:
    """Two holders in one process stand in for two processes sharing one data dir."""
    data_dir = data_parent / ".data"
    name = _fresh_database_name()
    first = _start_embedded(data_dir, name)
    services_to_stop.append(first)
    second = _start_embedded(data_dir, name)
    services_to_stop.append(second)

    assert _ports(first) == _ports(second)
    second.stop()
    assert all(port_is_listening(port) for port in _ports(first))
    first.stop()
    assert not any(port_is_listening(port) for port in _ports(first))
