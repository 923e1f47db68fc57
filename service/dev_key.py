"""The development API key `darkroom up` prints, kept in .data/ so restarts reuse it.

Beside the key, `up` records the URL it serves on while it runs, so that `darkroom submit`
finds the API whatever port it chose, and sends the key only to the server that accepts it.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from service.auth.service import create_key, find_key
from service.db import create_engine, create_sessionmaker, session_scope

DEV_KEY_FILE = "dev-key.json"


@dataclass(frozen=True)
class DevKey:
    key: str
    url: str | None  # where a running `darkroom up` serves; None when none runs


async def create_key_now(database_url: str, name: str, *, pepper: str) -> dict[str, str]:
    engine = create_engine(database_url, pool_size=1)
    try:
        async with session_scope(create_sessionmaker(engine)) as session:
            created = await create_key(session, name, pepper=pepper)
            return {"key": created.key, "webhook_secret": created.webhook_secret}
    finally:
        await engine.dispose()


async def ensure_dev_key(database_url: str, data_dir: Path, *, pepper: str) -> dict[str, str]:
    saved = _read(data_dir)
    if saved is not None:
        engine = create_engine(database_url, pool_size=1)
        try:
            async with create_sessionmaker(engine)() as session:
                if await find_key(session, saved["key"], pepper=pepper) is not None:
                    # A URL left by an `up` that was killed is stale until this one answers.
                    kept = {"key": saved["key"], "webhook_secret": saved["webhook_secret"]}
                    if saved != kept:
                        _write(data_dir, kept)
                    return kept
        finally:
            await engine.dispose()
    created = await create_key_now(database_url, "development", pepper=pepper)
    _write(data_dir, dict(created))  # a new key was issued by no running server yet: no URL
    return created


def record_api_url(data_dir: Path, url: str) -> None:
    """Called once the API answers: from now on the dev key belongs to this URL."""
    saved = _read(data_dir)
    if saved is not None:
        _write(data_dir, {**saved, "url": normalise_url(url)})


def forget_api_url(data_dir: Path, url: str) -> None:
    """Called when `up` stops: whatever listens on that port next is not ours."""
    saved = _read(data_dir)
    if saved is not None and saved.get("url") == normalise_url(url):
        del saved["url"]
        _write(data_dir, saved)


def read_dev_key(data_dir: Path) -> DevKey | None:
    saved = _read(data_dir)
    if saved is None or not isinstance(saved.get("key"), str):
        return None
    url = saved.get("url")
    return DevKey(key=saved["key"], url=url if isinstance(url, str) else None)


def normalise_url(url: str) -> str:
    return url.strip().rstrip("/")


def _read(data_dir: Path) -> dict[str, Any] | None:
    try:
        saved = json.loads((data_dir / DEV_KEY_FILE).read_text())
    except (OSError, ValueError):
        return None
    return saved if isinstance(saved, dict) else None


def _write(data_dir: Path, saved: dict[str, Any]) -> None:
    """Atomically, and readable by its owner only from the first byte: it holds a secret."""
    data_dir.mkdir(parents=True, exist_ok=True)
    staging = data_dir / f"{DEV_KEY_FILE}.tmp"
    staging.unlink(missing_ok=True)
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as file:
        file.write(json.dumps(saved))
    staging.replace(data_dir / DEV_KEY_FILE)
