"""arq's own throughput, as the yardstick for Darkroom's dispatch overhead: one arq Worker
process running no-op jobs, with the settings Darkroom's job Worker uses (max_jobs =
worker concurrency, poll_delay, keep_result=0), in burst mode (it exits once the queue
is empty). Prints one JSON line: when the first job started and the last one ended.

    python -m bench._arq_noop --redis URL --queue NAME --max-jobs 16 --poll-delay 0.05
    python -m bench._arq_noop --redis URL --queue NAME --enqueue 5000   # fill the queue
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

from arq.connections import RedisSettings, create_pool
from arq.worker import Worker, func

NOOP = "noop"


class Clock:
    first_start: float | None = None
    last_end: float = 0.0
    runs: int = 0


async def noop(ctx: dict[str, Any]) -> None:
    clock: Clock = ctx["clock"]
    if clock.first_start is None:
        clock.first_start = time.time()
    clock.runs += 1
    clock.last_end = time.time()


async def enqueue(redis_url: str, queue: str, count: int) -> None:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    try:
        for number in range(count):
            await pool.enqueue_job(NOOP, _job_id=f"noop-{number}", _queue_name=queue)
    finally:
        await pool.aclose()


async def run(redis_url: str, queue: str, max_jobs: int, poll_delay: float) -> dict[str, Any]:
    pool = await create_pool(RedisSettings.from_dsn(redis_url), default_queue_name=queue)
    clock = Clock()
    worker = Worker(
        functions=[func(noop, name=NOOP)],
        queue_name=queue,
        redis_pool=pool,
        ctx={"clock": clock},
        handle_signals=False,
        max_jobs=max_jobs,
        keep_result=0,
        poll_delay=poll_delay,
        burst=True,
    )
    began = time.time()
    try:
        await worker.main()
    finally:
        await worker.close()
    return {
        "jobs_run": clock.runs,
        "main_began": began,
        "first_start": clock.first_start,
        "last_end": clock.last_end,
        "main_ended": time.time(),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--redis", required=True)
    parser.add_argument("--queue", required=True)
    parser.add_argument("--enqueue", type=int, default=0)
    parser.add_argument("--max-jobs", type=int, default=16)
    parser.add_argument("--poll-delay", type=float, default=0.05)
    args = parser.parse_args()
    # Plain asyncio, as `darkroom worker` runs (no uvloop).
    if args.enqueue:
        asyncio.run(enqueue(args.redis, args.queue, args.enqueue))
        return
    result = asyncio.run(run(args.redis, args.queue, args.max_jobs, args.poll_delay))
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
