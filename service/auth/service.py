"""API keys: `Authorization: Bearer dk_...` on every /v1 route."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

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
