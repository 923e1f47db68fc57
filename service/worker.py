"""The worker process, in one event loop sharing a State:
- the dispatcher, which sends granted jobs to their providers (service.dispatch);
- an arq Worker for what waits (polls, callback completions, cancellations at the
  provider) plus the reconciler cron;
- an arq Worker for webhook deliveries.

arq's Worker exits when Redis goes away; `run_workers` builds everything again and
carries on, so `darkroom worker` outlives a Redis restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from arq import cron
from arq.worker import Function, Worker, func
from redis.exceptions import RedisError

from service.config import Settings
from service.dispatch.dispatcher import Dispatcher
from service.integrations.writeback import sink as _writeback_sink  # noqa: F401  (registers)
from service.jobs.polls import POLL_JOB, stop_on_time_polls
from service.jobs.runner import run_granted
from service.jobs.tasks import (
    CANCEL_REMOTE_JOBS,
    FINISH_REMOTE_JOB,
    cancel_queue_name,
    cancel_remote_jobs,
    finish_remote_job,
    poll_job,
    reconcile_jobs,
)
from service.logging import get_logger
from service.notifications import sink as _notify_sink  # noqa: F401  (registers)
from service.schedules.tasks import schedule_seconds, schedules_tick
from service.state import State, build_state, close_state
from service.webhooks.sinks import longest_deadline_s
from service.webhooks.tasks import deliver_webhook, reconcile_webhooks

log = get_logger(__name__)

# Attempts are counted in Postgres (each model's max_attempts); arq's own try counter
# must never be what gives up on a job.
ARQ_MAX_TRIES = 10_000


async def reconcile(ctx: dict[str, Any]) -> None:
    state: State = ctx["state"]
    await reconcile_jobs(state)
    await reconcile_webhooks(state)


# A poll or a completion is one short request (plus a download); a cancellation walks a
# batch. A task held by a worker that died runs again once this (+10 s) has passed: arq
# holds every task of a Worker that long (its longest timeout), so cancellations, which
# may run for minutes, have a Worker of their own.
POLL_TIMEOUT_S = 60
CANCEL_TIMEOUT_S = 600


def job_functions() -> list[Function]:
    return [
        func(poll_job, name=POLL_JOB, max_tries=ARQ_MAX_TRIES, timeout=POLL_TIMEOUT_S),
        func(finish_remote_job, name=FINISH_REMOTE_JOB, max_tries=3, timeout=POLL_TIMEOUT_S),
    ]


def build_dispatcher(state: State) -> Dispatcher:
    return Dispatcher(state, run_granted, concurrency=state.settings.worker_concurrency)


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
            ),
            # Schedules: every due time one batch (service.schedules.tasks).
            cron(
                schedules_tick,
                second=schedule_seconds(settings.schedule_interval_s),
                run_at_startup=True,
                unique=True,
                timeout=settings.job_timeout_s,
            ),
        ],
        ctx=ctx,
        handle_signals=False,
        max_jobs=settings.worker_concurrency,
        job_timeout=settings.job_timeout_s,
        keep_result=0,
        max_tries=ARQ_MAX_TRIES,
        poll_delay=settings.worker_poll_delay_s,
    )
    # A delivery's attempt ends by its deadline (webhook_timeout_s) and is recorded after:
    # arq's timeout must leave room for both, or arq cancels the recording it waits for.
    webhooks = Worker(
        functions=[func(deliver_webhook, name="deliver_webhook", max_tries=ARQ_MAX_TRIES)],
        queue_name=settings.webhook_queue_name,
        redis_pool=state.redis,
        ctx=ctx,
        handle_signals=False,
        max_jobs=50,
        job_timeout=int(longest_deadline_s(settings)) + 30,
        keep_result=0,
        max_tries=ARQ_MAX_TRIES,
        poll_delay=0.25,
    )
    cancellations = Worker(
        functions=[
            func(cancel_remote_jobs, name=CANCEL_REMOTE_JOBS, max_tries=3, timeout=CANCEL_TIMEOUT_S)
        ],
        queue_name=cancel_queue_name(settings),
        redis_pool=state.redis,
        ctx=ctx,
        handle_signals=False,
        max_jobs=4,
        keep_result=0,
        poll_delay=settings.worker_poll_delay_s,
    )
    return [jobs, webhooks, cancellations]


@dataclass(frozen=True)
class Loops:
    """A worker's loops, started in the current event loop."""

    dispatcher: Dispatcher
    workers: list[Worker]
    mains: list[asyncio.Task[None]]  # each arq Worker's main(): done when it exits


def start_loops(state: State) -> Loops:
    """The dispatcher and the arq Workers, running; the one way every runner of them
    (the worker process, run_until_idle, a test) starts them."""
    workers = build_workers(state)
    dispatcher = build_dispatcher(state)
    mains = [asyncio.create_task(worker.main()) for worker in workers]
    dispatcher.start()
    return Loops(dispatcher, workers, mains)


@contextlib.asynccontextmanager
async def running_worker(state: State) -> AsyncIterator[Loops]:
    """A worker's loops in the caller's event loop until the block ends (run_until_idle,
    and tests that need a worker beside a live server). They stop at once, with a short
    grace: nothing here outlives the block, unlike the process's wind_down."""
    loops = start_loops(state)
    try:
        yield loops
    finally:
        await loops.dispatcher.stop(grace_s=5)
        await stop_on_time_polls(grace_s=5)
        for main in loops.mains:
            main.cancel()
        await asyncio.gather(*loops.mains, return_exceptions=True)
        for worker in loops.workers:
            await asyncio.gather(*worker.tasks.values(), return_exceptions=True)


async def run_until_idle(
    state: State, *, wait_for_deferred: bool = False, poll_s: float = 0.05
) -> None:
    """Run the dispatcher and workers until nothing is due or running, then return
    (tests, `submit --wait`).

    With `wait_for_deferred`, also until no poll or backed-off job is waiting for later
    (webhook retries, hours away, never count). A running arq job stays in its queue
    until it finishes, so "nothing due" also means "nothing running"."""
    async with running_worker(state) as loops:
        quiet = 0
        while quiet < 3 and not any(main.done() for main in loops.mains):
            await asyncio.sleep(poll_s)
            idle = not loops.dispatcher.busy and await _nothing_due(
                state, loops.workers, wait_for_deferred
            )
            quiet = quiet + 1 if idle else 0


async def _nothing_due(state: State, workers: list[Worker], wait_for_deferred: bool) -> bool:
    now_ms = int(time.time() * 1000)
    jobs_until = "+inf" if wait_for_deferred else now_ms
    for account in state.dispatch.accounts():
        queue = state.dispatch.queue(account)
        keys = queue.keys
        queued = await queue.backlog()
        delayed_due = await state.redis.zcount(keys.delayed, "-inf", jobs_until)
        delayed = await state.redis.zcard(keys.delayed)
        if queued - delayed + delayed_due > 0:
            return False
    for worker in workers:
        until = jobs_until if worker.queue_name == state.settings.queue_name else now_ms
        if await state.redis.zcount(worker.queue_name, "-inf", until) > 0:
            return False
    return True


async def wind_down(
    dispatcher: Dispatcher,
    workers: list[Worker],
    *,
    grace_s: float,
    hurry: asyncio.Event | None = None,
) -> None:
    """Stop taking work and let what runs finish within `grace_s`, all at once: the
    dispatcher takes no grant and the arq Workers pick no task, while provider requests,
    on-time polls and arq's tasks (polls, deliveries, cancellations) in flight finish and
    record what they did. Whatever is still running when the grace ends is cancelled
    and resumed elsewhere: a provider request by the reconciler once its slot's lease
    runs out (an async create in doubt is looked up at the provider before any resend),
    an arq task by arq once its in-progress key expires, a delivery after recording its
    attempt as interrupted (webhooks/delivery.py). `hurry` set (a second signal) ends
    the grace at once."""
    started = time.monotonic()
    for worker in workers:
        worker.allow_pick_jobs = False
    log.info("worker_stopping", grace_s=grace_s, requests_in_flight=len(dispatcher.running))
    finishing = asyncio.gather(
        dispatcher.stop(grace_s=grace_s),
        stop_on_time_polls(grace_s=grace_s),
        _arq_tasks_finish(workers, grace_s=grace_s),
    )
    hurried = asyncio.create_task((hurry or asyncio.Event()).wait())
    waiting: list[asyncio.Future[Any]] = [finishing, hurried]
    await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
    hurried.cancel()
    if not finishing.done():
        log.warning("worker_stopping_now", requests_cut=len(dispatcher.running))
        # The same cut as at the end of the grace, now; the waits above then end too.
        await asyncio.gather(dispatcher.stop(grace_s=0), stop_on_time_polls(grace_s=0))
        for worker in workers:
            for task in worker.tasks.values():
                task.cancel()
        await finishing
    cut = sum(not task.done() for worker in workers for task in worker.tasks.values())
    for worker in workers:
        # close() cancels the tasks still running and re-raises their CancelledError.
        await asyncio.gather(worker.close(), return_exceptions=True)
    log.info("worker_wound_down", took_s=round(time.monotonic() - started, 2), arq_tasks_cut=cut)


async def _arq_tasks_finish(workers: list[Worker], *, grace_s: float) -> None:
    running = [task for worker in workers for task in worker.tasks.values() if not task.done()]
    if running:
        await asyncio.wait(running, timeout=grace_s)


async def run_workers(settings: Settings) -> None:
    """Run until SIGINT/SIGTERM, rebuilding the workers whenever Redis drops them."""
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()
    first: list[signal.Signals] = []

    def on_signal(sig: signal.Signals) -> None:
        """The first signal winds down within the grace; the same signal again cuts it
        short. Only the same: a Ctrl-C under `darkroom up` reaches the worker as SIGINT
        (its process group) and then as SIGTERM (from `up`), which is one request."""
        if not first:
            first.append(sig)
            stop.set()
        elif sig == first[0]:
            hurry.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    delay = 1.0
    while not stop.is_set():
        started = loop.time()
        try:
            state = await build_state(settings, pool_size=settings.worker_concurrency + 4)
        except (RedisError, OSError) as exc:  # Redis still down: try again later
            log.warning("worker_cannot_reach_redis", error=repr(exc), retry_in_s=delay)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 30.0)
            continue
        loops = start_loops(state)
        stopper = asyncio.create_task(stop.wait())
        log.info("worker_started", queues=[w.queue_name for w in loops.workers])
        done, _ = await asyncio.wait([*loops.mains, stopper], return_when=asyncio.FIRST_COMPLETED)
        grace_s = settings.shutdown_grace_s if stop.is_set() else min(settings.shutdown_grace_s, 10)
        await wind_down(loops.dispatcher, loops.workers, grace_s=grace_s, hurry=hurry)
        for task in [*loops.mains, stopper]:
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
