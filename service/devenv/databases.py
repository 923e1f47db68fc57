"""Create and drop a database through the server's "postgres" maintenance database.

CREATE/DROP DATABASE cannot run inside a transaction, and cannot run while connected to the
database in question, hence the separate autocommit connection.
"""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from service.devenv.probes import asyncpg_url, postgres_engine, run_sync, sqlstate

MAINTENANCE_DATABASE = "postgres"
_DUPLICATE_DATABASE = "42P04"


def quote_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _database_name(database_url: str) -> str:
    name = asyncpg_url(database_url).database
    if not name:
        raise ValueError(f"the database URL names no database: {database_url!r}")
    return name


async def _create_database_if_missing(database_url: str) -> None:
    name = _database_name(database_url)
    engine = postgres_engine(
        asyncpg_url(database_url, database=MAINTENANCE_DATABASE), autocommit=True
    )
    try:
        async with engine.connect() as connection:
            exists = await connection.scalar(
                sa.text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            )
            if exists:
                return
            try:
                await connection.execute(sa.text(f"CREATE DATABASE {quote_identifier(name)}"))
            except DBAPIError as error:
                # Another process created it between our check and our CREATE: fine.
                if sqlstate(error) != _DUPLICATE_DATABASE:
                    raise
    finally:
        await engine.dispose()


async def _drop_database(database_url: str) -> None:
    name = _database_name(database_url)
    engine = postgres_engine(
        asyncpg_url(database_url, database=MAINTENANCE_DATABASE), autocommit=True
    )
    try:
        async with engine.connect() as connection:
            await connection.execute(
                sa.text(f"DROP DATABASE IF EXISTS {quote_identifier(name)} WITH (FORCE)")
            )
    finally:
        await engine.dispose()


def create_database_if_missing(database_url: str) -> None:
    run_sync(_create_database_if_missing(database_url))


def drop_database(database_url: str) -> None:
    """Drop the database, disconnecting whoever is still connected to it."""
    run_sync(_drop_database(database_url))
