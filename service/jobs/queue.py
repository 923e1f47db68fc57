"""Putting work on arq's queue, many jobs per Redis round trip.

arq's own `enqueue_job` costs several round trips per job (WATCH, EXISTS, MULTI/EXEC);
a 10,000-job batch would spend seconds there. This module writes the same keys arq
reads (job hash under `arq:job:<id>`, member of the queue's sorted set) through one
Lua script per job, pipelined, with arq's rule kept: a job id that is queued, running
or has a stored result is not enqueued again, so enqueueing is idempotent and the
reconciler may call it as often as it likes.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

from arq.connections import ArqRedis
from arq.constants import expires_extra_ms, job_key_prefix, result_key_prefix
from arq.jobs import serialize_job

RUN_JOB = "run_job"
DELIVER_WEBHOOK = "deliver_webhook"

# KEYS: job key, result key, queue. ARGV: expiry ms, serialized job, score, job id.
_ENQUEUE_IF_ABSENT = """
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then
  return 0
end
redis.call('PSETEX', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return 1
"""

CHUNK = 2_000


async def enqueue_run_jobs(
    redis: ArqRedis, job_ids: Iterable[str], *, queue_name: str, defer_ms: int = 0
) -> int:
    """Enqueue `run_job(job_id)` for each id (arq job id = our job id). Returns how many
    were newly enqueued; ids already queued or running are left alone."""
    script = redis.register_script(_ENQUEUE_IF_ABSENT)
    added = 0
    now = int(time.time() * 1000)
    score = now + defer_ms
    expires = defer_ms + expires_extra_ms
    chunk: list[str] = []
    for job_id in job_ids:
        chunk.append(job_id)
        if len(chunk) >= CHUNK:
            added += await _enqueue_chunk(redis, script, chunk, queue_name, now, score, expires)
            chunk = []
    if chunk:
        added += await _enqueue_chunk(redis, script, chunk, queue_name, now, score, expires)
    return added


async def _enqueue_chunk(
    redis: ArqRedis,
    script: object,
    job_ids: Sequence[str],
    queue_name: str,
    now: int,
    score: int,
    expires: int,
) -> int:
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            payload = serialize_job(
                RUN_JOB, (job_id,), {}, None, now, serializer=redis.job_serializer
            )
            await script(  # type: ignore[operator]
                keys=[job_key_prefix + job_id, result_key_prefix + job_id, queue_name],
                args=[expires, payload, score, job_id],
                client=pipe,
            )
        results = await pipe.execute()
    return sum(int(r) for r in results)


async def missing_from_queue(redis: ArqRedis, arq_job_ids: Sequence[str]) -> list[str]:
    """Which of these arq job ids Redis knows nothing about (no job key, no result)."""
    if not arq_job_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in arq_job_ids:
            pipe.exists(job_key_prefix + job_id, result_key_prefix + job_id)
        counts = await pipe.execute()
    return [job_id for job_id, n in zip(arq_job_ids, counts, strict=True) if int(n) == 0]
