"""API keys: `Authorization: Bearer dk_...` on every /v1 route."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from service.kit.base import utcnow
from service.kit.signing import hash_api_key, new_api_key, new_webhook_secret
from service.models import ApiKey


@dataclass(frozen=True)
class NewKey:
    api_key: ApiKey
    key: str  # shown once, never stored

    @property
    def webhook_secret(self) -> str:
        return self.api_key.webhook_secret


async def create_key(session: AsyncSession, name: str, *, pepper: str) -> NewKey:
    key = new_api_key()
    api_key = ApiKey(
        name=name,
        prefix=key[:10],
        key_hash=hash_api_key(key, pepper),
        webhook_secret=new_webhook_secret(),
    )
    session.add(api_key)
    await session.flush()
    return NewKey(api_key, key)


async def find_key(session: AsyncSession, key: str, *, pepper: str) -> ApiKey | None:
    query = select(ApiKey).where(
        ApiKey.key_hash == hash_api_key(key, pepper), ApiKey.revoked_at.is_(None)
    )
    return (await session.execute(query)).scalar_one_or_none()


# How long a rotated-out webhook secret keeps signing deliveries beside the new one.
PREVIOUS_SECRET_VALID = timedelta(hours=24)


@dataclass(frozen=True)
class RotatedSecret:
    webhook_secret: str  # returned once, never again
    previous_valid_until: datetime


async def rotate_webhook_secret(session: AsyncSession, api_key: ApiKey) -> RotatedSecret:
    """A new webhook secret; the current one keeps signing beside it for 24 h, so a
    receiver can switch to the new one without rejecting an event in between. A second
    rotation within the 24 h drops the oldest (only two secrets ever sign)."""
    now = utcnow()
    locked = await session.get(ApiKey, api_key.id, with_for_update=True)
    assert locked is not None
    locked.previous_webhook_secret = locked.webhook_secret
    locked.previous_webhook_secret_expires_at = now + PREVIOUS_SECRET_VALID
    locked.webhook_secret = new_webhook_secret()
    await session.flush()
    return RotatedSecret(locked.webhook_secret, locked.previous_webhook_secret_expires_at)
