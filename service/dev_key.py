"""The development API key `darkroom up` prints, kept in .data/ so restarts reuse it."""

from __future__ import annotations

import json
from pathlib import Path

from service.auth.service import create_key, find_key
from service.db import create_engine, create_sessionmaker, session_scope

DEV_KEY_FILE = "dev-key.json"


async def create_key_now(database_url: str, name: str, *, pepper: str) -> dict[str, str]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            created = await create_key(session, name, pepper=pepper)
            return {"key": created.key, "webhook_secret": created.webhook_secret}
    finally:
        await engine.dispose()


async def ensure_dev_key(database_url: str, data_dir: Path, *, pepper: str) -> dict[str, str]:
    path = data_dir / DEV_KEY_FILE
    if path.exists():
        saved: dict[str, str] = json.loads(path.read_text())
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                if await find_key(session, saved["key"], pepper=pepper) is not None:
                    return saved
        finally:
            await engine.dispose()
    created = await create_key_now(database_url, "development", pepper=pepper)
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(created))
    path.chmod(0o600)
    return created


def read_dev_key(data_dir: Path) -> str | None:
    path = data_dir / DEV_KEY_FILE
    if not path.exists():
        return None
    key: str = json.loads(path.read_text())["key"]
    return key
