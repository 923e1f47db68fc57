"""Claiming a Redis db number (1-15) on a shared server, so test runs and benchmarks that
share one Redis never see each other's keys. The claim is a key in db 0, set with NX."""

from __future__ import annotations

import redis

CLAIM_TTL_S = 6 * 3600


def _claim_key(number: int) -> str:
    return f"darkroom:test-claim:{number}"


def claim_redis_db(server_url: str, owner: str) -> int:
    client = redis.Redis.from_url(server_url)
    try:
        for number in range(1, 16):
            if client.set(_claim_key(number), owner, nx=True, ex=CLAIM_TTL_S):
                return number
    finally:
        client.close()
    raise RuntimeError("every Redis db 1-15 is claimed by another run")


def release_redis_db(server_url: str, number: int, owner: str) -> None:
    """Release the claim if it is still ours (it may have expired and been taken)."""
    client = redis.Redis.from_url(server_url)
    try:
        if client.get(_claim_key(number)) == owner.encode():
            client.delete(_claim_key(number))
    finally:
        client.close()


def with_db(server_url: str, number: int) -> str:
    return server_url.rsplit("/", 1)[0] + f"/{number}"
