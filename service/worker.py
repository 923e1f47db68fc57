"""The worker process: one arq Worker for image jobs (plus the reconciler cron) and one
for webhook deliveries, sharing a State, in one event loop.

arq's Worker exits when Redis goes away; `run_workers` builds new ones and carries on,
so `darkroom worker` outlives a Redis restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from typing import Any

from arq import cron
from arq.worker import Function, Worker, func

from service.config import Settings
from service.jobs.tasks import reconcile_jobs, run_job
from service.logging import get_logger
from service.state import State, build_state, close_state
from service.webhooks.tasks import deliver_webhook, reconcile_webhooks

log = get_logger(__name__)

# Attempts are counted in Postgres (settings.job_max_attempts); arq's own try counter
# must never be what gives up on a job.
ARQ_MAX_TRIES = 10_000


async def reconcile(ctx: dict[str, Any]) -> None:
    state: State = ctx["state"]
    await reconcile_jobs(state)
    await reconcile_webhooks(state)


def job_functions() -> list[Function]:
    return [func(run_job, name="run_job", max_tries=ARQ_MAX_TRIES)]


def build_workers(state: State) -> list[Worker]:
    settings = state.settings
    ctx: dict[str, Any] = {"state": state}
    every = settings.reconcile_interval_s
    jobs = Worker(
        functions=job_functions(),
        queue_name=settings.queue_name,
        redis_pool=state.redis,
        cron_jobs=[
            cron(
                reconcile,
                second=set(range(0, 60, every)) if every < 60 else {0},
                run_at_startup=True,
                unique=True,
                timeout=settings.job_timeout_s,
            )
        ],
        ctx=ctx,
        handle_signals=False,
        max_jobs=settings.worker_concurrency,
        job_timeout=settings.job_timeout_s,
        keep_result=0,
        max_tries=ARQ_MAX_TRIES,
        poll_delay=settings.worker_poll_delay_s,
    )
    webhooks = Worker(
        functions=[func(deliver_webhook, name="deliver_webhook", max_tries=ARQ_MAX_TRIES)],
        queue_name=settings.webhook_queue_name,
        redis_pool=state.redis,
        ctx=ctx,
        handle_signals=False,
        max_jobs=50,
        job_timeout=int(settings.webhook_timeout_s) + 30,
        keep_result=0,
        max_tries=ARQ_MAX_TRIES,
        poll_delay=0.5,
    )
    return [jobs, webhooks]


async def run_until_idle(state: State, *, poll_s: float = 0.05) -> None:
    """Run the workers until no job is due or running, then return (tests, `submit --wait`).

    arq's own burst mode also waits for deferred jobs (a webhook retry an hour away);
    this stops as soon as nothing is due now. A running job stays in arq's queue until
    it finishes, so "nothing due" also means "nothing running"."""
    for worker in build_workers(state):
        main = asyncio.create_task(worker.main())
        try:
            while not main.done():
                await asyncio.sleep(poll_s)
                now_ms = int(time.time() * 1000)
                if await state.redis.zcount(worker.queue_name, "-inf", now_ms) == 0:
                    break
        finally:
            main.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await main
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def run_workers(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, rebuilding the workers whenever Redis drops them."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    delay = 1.0
    while not stop.is_set():
        started = loop.time()
        state = await build_state(settings, pool_size=settings.worker_concurrency + 4)
        workers = build_workers(state)
        mains = [asyncio.create_task(worker.main()) for worker in workers]
        stopper = asyncio.create_task(stop.wait())
        log.info("worker_started", queues=[w.queue_name for w in workers])
        done, _ = await asyncio.wait([*mains, stopper], return_when=asyncio.FIRST_COMPLETED)
        for worker in workers:
            with contextlib.suppress(Exception):
                await worker.close()
        for task in [*mains, stopper]:
            task.cancel()
        failure = next(
            (t.exception() for t in done if t is not stopper and not t.cancelled()), None
        )
        with contextlib.suppress(Exception):
            await close_state(state)
        if stop.is_set():
            break
        if loop.time() - started > 60:
            delay = 1.0
        log.warning("worker_lost_redis_restarting", error=repr(failure), retry_in_s=delay)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
        delay = min(delay * 2, 30.0)
    log.info("worker_stopped")
