"""Migrations run from wherever the user is, and alembic.ini still serves developers.

The installed wheel itself is exercised end to end by scripts/check_wheel.py (run by CI).
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import sqlalchemy as sa

from service.devenv import create_database_if_missing, drop_database
from service.devenv.probes import asyncpg_url, postgres_engine, run_sync
from service.migrate import head_revision
from tests.conftest import ROOT, ServiceUrls

BIN = Path(sys.executable).parent


async def current_revision(database_url: str) -> str | None:
    engine = postgres_engine(asyncpg_url(database_url), autocommit=True)
    try:
        async with engine.connect() as connection:
            revision = await connection.scalar(sa.text("SELECT version_num FROM alembic_version"))
    finally:
        await engine.dispose()
    return None if revision is None else str(revision)


def test_migrate_works_from_a_folder_without_project_files(
    services: ServiceUrls, tmp_path: Path
) -> None:
    fresh = asyncpg_url(
        services.database_url, database=f"darkroom_anywhere_{uuid.uuid4().hex[:8]}"
    ).render_as_string(hide_password=False)
    create_database_if_missing(fresh)
    try:
        result = subprocess.run(
            [BIN / "darkroom", "migrate", "--json"],
            cwd=tmp_path,
            env={"DARKROOM_DATABASE_URL": fresh, "PATH": str(BIN)},
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout) == {"revision": head_revision()}
        assert run_sync(current_revision(fresh)) == head_revision()
    finally:
        drop_database(fresh)


def test_alembic_ini_still_serves_the_alembic_command() -> None:
    result = subprocess.run(
        [BIN / "alembic", "heads"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split()[0] == head_revision()
