"""A local-renderer configuration with priced models, and what the tests read back."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from decimal import Decimal
from typing import Any

import httpx
from sqlalchemy import select

from service.models import Job, JobAttempt
from service.models.budget import BudgetLedger
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit

PRICE = 0.003


def budget_config(
    *, account_budget: dict[str, Any] | None = None, max_concurrent: int | None = None
) -> str:
    """One `local` account, models at $0.003 an image: `cheap` renders, `broken` fails
    at the provider (no such model there), and `with-fallback` names a fallback."""
    price = {"per_image": PRICE}
    limits = {"max_concurrent": max_concurrent} if max_concurrent else {}
    config: dict[str, Any] = {
        "providers": {"local": {"kind": "local", "limits": limits}},
        "models": {
            "cheap": {"provider": "local", "ref": "procedural", "price": price},
            "broken": {
                "provider": "local",
                "ref": "no-such-model",
                "price": price,
                "max_attempts": 1,
            },
            "with-fallback": {
                "provider": "local",
                "ref": "procedural",
                "price": price,
                "fallbacks": ["cheap"],
            },
        },
    }
    if account_budget is not None:
        config["budgets"] = {"accounts": {"local": account_budget}}
    return json.dumps(config)  # JSON is YAML


def batch_body(n: int, *, model: str = "cheap", tag: str = "p", **extra: Any) -> dict[str, Any]:
    return {
        "defaults": {"model": model, "width": 64, "height": 64},
        "jobs": [{"prompt": f"{tag} {i}"} for i in range(n)],
        **extra,
    }


async def run_batch(
    client: httpx.AsyncClient, caller: Caller, state: State, body: dict[str, Any]
) -> tuple[str, list[Job]]:
    """Submit a batch, run the workers until they are idle, and read back its jobs."""
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)
    return batch_id, await jobs_of(state, batch_id)


async def jobs_of(state: State, batch_id: str) -> list[Job]:
    async with state.sessionmaker() as session:
        query = select(Job).where(Job.batch_id == uuid.UUID(batch_id)).order_by(Job.index)
        return list((await session.execute(query)).scalars())


def statuses(jobs: list[Job]) -> Counter[str]:
    return Counter(job.status.value for job in jobs)


def refusals(jobs: list[Job]) -> set[str | None]:
    """The messages of the jobs that failed (each names the budget that refused it)."""
    return {job.error_message for job in jobs if job.error_code}


async def attempts_of(state: State, batch_id: str) -> list[JobAttempt]:
    async with state.sessionmaker() as session:
        query = (
            select(JobAttempt)
            .join(Job, Job.id == JobAttempt.job_id)
            .where(Job.batch_id == uuid.UUID(batch_id))
        )
        return list((await session.execute(query)).scalars())


async def ledgers(state: State) -> dict[str, Decimal]:
    """Every ledger's amount, by scope (the tests run within one period)."""
    async with state.sessionmaker() as session:
        rows = (await session.execute(select(BudgetLedger))).scalars()
        return {row.scope: row.reserved_usd for row in rows}
