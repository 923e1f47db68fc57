"""Putting work on arq's queue, many jobs per Redis round trip.

arq's own `enqueue_job` costs several round trips per job (WATCH, EXISTS, MULTI/EXEC);
a 10,000-job batch would spend seconds there. This module writes the same keys arq
reads (job hash under `arq:job:<id>`, member of the queue's sorted set) with one Lua
script call per thousand jobs, with arq's rule kept: a job id that is queued, running
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

# One call per chunk of jobs. KEYS[1]: the queue. ARGV: job key prefix, result key prefix,
# expiry ms, score, then (job id, serialized job) pairs. Returns how many were added.
_ENQUEUE_IF_ABSENT = """
local added = 0
for i = 5, #ARGV, 2 do
  local id = ARGV[i]
  local job_key = ARGV[1] .. id
  if redis.call('EXISTS', job_key, ARGV[2] .. id) == 0 then
    redis.call('PSETEX', job_key, ARGV[3], ARGV[i + 1])
    redis.call('ZADD', KEYS[1], ARGV[4], id)
    added = added + 1
  end
end
return added
"""

CHUNK = 1_000


async def enqueue_run_jobs(
    redis: ArqRedis, job_ids: Iterable[str], *, queue_name: str, defer_ms: int = 0
) -> int:
    """Enqueue `run_job(job_id)` for each id (arq job id = our job id). Returns how many
    were newly enqueued; ids already queued or running are left alone."""
    script = redis.register_script(_ENQUEUE_IF_ABSENT)
    now = int(time.time() * 1000)
    head: list[str | int | bytes] = [
        job_key_prefix,
        result_key_prefix,
        defer_ms + expires_extra_ms,
        now + defer_ms,
    ]
    ids = list(job_ids)
    added = 0
    for start in range(0, len(ids), CHUNK):
        args: list[str | int | bytes] = list(head)
        for job_id in ids[start : start + CHUNK]:
            payload = serialize_job(
                RUN_JOB, (job_id,), {}, None, now, serializer=redis.job_serializer
            )
            args += [job_id, payload]
        added += int(await script(keys=[queue_name], args=args))
    return added


async def missing_from_queue(redis: ArqRedis, arq_job_ids: Sequence[str]) -> list[str]:
    """Which of these arq job ids Redis knows nothing about (no job key, no result)."""
    if not arq_job_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in arq_job_ids:
            pipe.exists(job_key_prefix + job_id, result_key_prefix + job_id)
        counts = await pipe.execute()
    return [job_id for job_id, n in zip(arq_job_ids, counts, strict=True) if int(n) == 0]
