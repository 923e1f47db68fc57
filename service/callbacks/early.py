"""Callbacks that arrive before the worker that submitted the job stored the prediction
id (a fast provider can finish within the submit's own round trip). They wait in Redis
for that worker, which finishes the job with them instead of polling."""

from __future__ import annotations

import json

from redis.exceptions import RedisError

from service.kit.errors import ServiceUnavailable
from service.providers.base import RemoteHandle
from service.state import State

# Long enough for any submitting worker to store its prediction id.
EARLY_CALLBACK_TTL_S = 600


def early_callback_key(account: str, remote_id: str) -> str:
    return f"dr:early-callback:{account}:{remote_id}"


async def keep_early_callback(state: State, account: str, remote: RemoteHandle) -> None:
    try:
        await state.redis.set(
            early_callback_key(account, remote.id),
            json.dumps(remote.to_json()),
            ex=EARLY_CALLBACK_TTL_S,
        )
    except (RedisError, OSError) as exc:
        raise ServiceUnavailable("cannot keep the result now; send it again later") from exc


async def take_early_callback(state: State, account: str, remote_id: str) -> RemoteHandle | None:
    try:
        raw = await state.redis.getdel(early_callback_key(account, remote_id))
    except (RedisError, OSError):
        return None
    return RemoteHandle.from_json(json.loads(raw)) if raw else None
