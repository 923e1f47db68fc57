"""What Redis knows of arq jobs, for the reconcilers."""

from __future__ import annotations

from collections.abc import Sequence

from arq.connections import ArqRedis
from arq.constants import job_key_prefix, result_key_prefix

DELIVER_WEBHOOK = "deliver_webhook"


async def missing_from_queue(redis: ArqRedis, arq_job_ids: Sequence[str]) -> list[str]:
    """Which of these arq job ids Redis knows nothing about (no job key, no result)."""
    if not arq_job_ids:
        return []
    async with redis.pipeline(transaction=False) as pipe:
        for job_id in arq_job_ids:
            pipe.exists(job_key_prefix + job_id, result_key_prefix + job_id)
        counts = await pipe.execute()
    return [job_id for job_id, n in zip(arq_job_ids, counts, strict=True) if int(n) == 0]
