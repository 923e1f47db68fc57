"""kill -9 of `darkroom worker`s, again and again, while a 1,000-job batch runs against the
provider simulator: every job still succeeds, no provider request is paid for twice
beyond the requests the dead workers had in flight, and every job's event reaches the
caller exactly under one webhook-id."""

from __future__ import annotations

import asyncio
import logging

from simulators import SimConfig
from tests.faults.processes import Process
from tests.faults.stack import Stack, cut_short, webhook_ids_by_event
from tests.webhooks.receiver import running_receiver

log = logging.getLogger(__name__)

JOBS = 1_000
WORKERS = 3
KILLS = 6
KILL_EVERY_S = 1.5
# The first kill waits for this many finished jobs, so work is surely in flight.
FIRST_KILL_AFTER = 30
DEADLINE_S = 180.0


async def test_kill_9_workers_during_a_1000_job_batch(stack: Stack) -> None:
    simulator = stack.start_simulator(
        SimConfig.model_validate({"latency": {"kind": "uniform", "low": 0.2, "high": 0.5}})
    )
    await stack.start_workers(WORKERS)
    await stack.start_api()
    async with running_receiver() as receiver:
        batch_id = await stack.submit(JOBS, tag="kill", callback_url=receiver.url)
        assert batch_id is not None

        in_flight_at_kills: list[int] = []
        killed: list[Process] = []
        polls_at_kills: list[int] = []
        while len(killed) < KILLS:
            counts = await stack.db.job_counts()
            finished = counts["succeeded"] + counts["failed"]
            if finished >= JOBS * 0.9:
                break
            if finished < FIRST_KILL_AFTER:
                await asyncio.sleep(0.1)
                continue
            victim = stack.processes.live_workers()[0]
            victim.kill()
            killed.append(victim)
            # The dead worker's claimed-but-unanswered submissions stay as they are; the
            # live workers' add a few more: an upper bound of what the kill interrupted.
            in_flight_at_kills.append(await stack.db.running_unsubmitted())
            polls_at_kills.append(await stack.polls_in_progress())
            stack.processes.start_worker()
            await asyncio.sleep(KILL_EVERY_S)

        job_ids = [row[0] for row in await stack.db.rows("SELECT id::text FROM jobs")]

        async def every_event_arrived() -> bool:
            seen = webhook_ids_by_event(receiver)
            return ("batch.completed", batch_id) in seen and all(
                ("job.succeeded", job_id) in seen for job_id in job_ids
            )

        took = await stack.wait_until_no_active_jobs(timeout_s=DEADLINE_S, also=every_event_arrived)

    counts = await stack.db.job_counts()
    stats = await simulator.stats()
    outcomes = {
        f"{outcome}:{code}": n
        for outcome, code, n in await stack.db.rows(
            "SELECT outcome, error_code, count(*) FROM job_attempts GROUP BY 1, 2"
        )
    }
    seen = webhook_ids_by_event(receiver)
    under_two_ids = {event: ids for event, ids in seen.items() if len(ids) > 1}
    log.warning(
        "kills=%d in_flight_at_kills=%s polls_in_progress_at_kills=%s duplicates=%d "
        "attempts=%s creations=%d "
        "webhooks_received=%d (cut short by a kill: %d) distinct_events=%d "
        "finished_after_last_kill_s=%.1f",
        len(killed),
        in_flight_at_kills,
        polls_at_kills,
        stats["duplicate_submissions"],
        outcomes,
        stats["creations_accepted"],
        len(receiver.received),
        cut_short(receiver),
        len(seen),
        took,
    )

    assert len(killed) == KILLS, f"the batch finished after only {len(killed)} kills"
    assert all(w.popen.returncode == -9 for w in killed)
    assert counts == {"succeeded": JOBS}, dict(counts)
    assert stats["duplicate_submissions"] <= sum(in_flight_at_kills), (
        f"{stats['duplicate_submissions']} duplicate submissions, "
        f"but only {in_flight_at_kills} jobs were in flight at the kills"
    )
    assert under_two_ids == {}, f"events delivered under two different ids: {under_two_ids}"
    assert {event for event in seen if event[0] == "job.succeeded"} == {
        ("job.succeeded", job_id) for job_id in job_ids
    }
