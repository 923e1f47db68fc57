"""Queries for key budgets and budget ledgers.

Ledger rows are locked in one order everywhere: by (scope, period), the scope compared
byte by byte (COLLATE "C", as Python sorts it), after batch rows and before job rows."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from datetime import date
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Date,
    String,
    Uuid,
    any_,
    bindparam,
    false,
    func,
    literal,
    select,
    tuple_,
)
from sqlalchemy.dialects.postgresql import ARRAY, insert
from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Batch, Job, JobAttempt, Priority
from service.models.budget import BudgetLedger, KeyBudget

LedgerKey = tuple[str, date]


async def key_budgets(
    session: AsyncSession, api_key_ids: Collection[uuid.UUID]
) -> dict[uuid.UUID, KeyBudget]:
    """The budgets of these keys, in one statement (a claim group's keys)."""
    if not api_key_ids:
        return {}
    ids = bindparam(None, sorted(set(api_key_ids)), type_=ARRAY(Uuid()))
    query = select(KeyBudget).where(KeyBudget.api_key_id == any_(ids))
    return {b.api_key_id: b for b in (await session.execute(query)).scalars()}


async def get_key_budget(session: AsyncSession, api_key_id: uuid.UUID) -> KeyBudget | None:
    return await session.get(KeyBudget, api_key_id)


async def lock_key_budget(session: AsyncSession, api_key_id: uuid.UUID) -> KeyBudget:
    """The key's budget row, created empty if it has none, locked for an update."""
    await session.execute(insert(KeyBudget).values(api_key_id=api_key_id).on_conflict_do_nothing())
    found = await session.get(KeyBudget, api_key_id, with_for_update=True, populate_existing=True)
    assert found is not None
    return found


async def existing_ledgers(session: AsyncSession, keys: Collection[LedgerKey]) -> set[LedgerKey]:
    """Which of these ledger rows exist (no lock: a row, once made, is never deleted)."""
    query = select(BudgetLedger.scope, BudgetLedger.period_start).where(_keys_in(keys))
    return {(scope, period) for scope, period in await session.execute(query)}


async def read_ledgers(
    session: AsyncSession, keys: Collection[LedgerKey]
) -> dict[LedgerKey, Decimal]:
    query = select(BudgetLedger.scope, BudgetLedger.period_start, BudgetLedger.reserved_usd)
    rows = await session.execute(query.where(_keys_in(keys)))
    return {(scope, period): reserved for scope, period, reserved in rows}


async def lock_ledgers(
    session: AsyncSession, keys: Collection[LedgerKey]
) -> dict[LedgerKey, BudgetLedger]:
    """Existing rows, locked in (scope, period) order by one statement."""
    query = (
        select(BudgetLedger)
        .where(_keys_in(keys))
        .order_by(BudgetLedger.scope.collate("C"), BudgetLedger.period_start)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    rows = (await session.execute(query)).scalars()
    return {(row.scope, row.period_start): row for row in rows}


async def create_and_lock_ledger(
    session: AsyncSession, key: LedgerKey, seed: ColumnElement[Any] | None
) -> BudgetLedger:
    """Create the row if missing, its amount `seed` (evaluated only then), and lock it.
    A concurrent creator's insert makes this wait for its commit, then do nothing."""
    scope, period = key
    missing = ~(
        select(BudgetLedger.scope)
        .where(BudgetLedger.scope == scope, BudgetLedger.period_start == period)
        .exists()
    )
    amount = func.coalesce(seed, 0) if seed is not None else literal(0)
    rows = select(literal(scope, String()), literal(period, Date()), amount).where(missing)
    statement = (
        insert(BudgetLedger)
        .from_select(["scope", "period_start", "reserved_usd"], rows)
        .on_conflict_do_nothing()
    )
    await session.execute(statement)
    found = await session.get(BudgetLedger, key, with_for_update=True, populate_existing=True)
    assert found is not None
    return found


def spend_of_key(
    api_key_id: uuid.UUID, start: date, end: date, priorities: Sequence[Priority]
) -> ColumnElement[Any]:
    """What the key's attempts of these priorities that started in [start, end) cost."""
    return _spend(Batch.api_key_id == api_key_id, start, end, priorities)


def spend_of_account(
    account: str, start: date, end: date, priorities: Sequence[Priority]
) -> ColumnElement[Any]:
    """What the account's attempts of these priorities that started in [start, end) cost."""
    return _spend(JobAttempt.provider == account, start, end, priorities)


def _spend(
    owner: ColumnElement[bool], start: date, end: date, priorities: Sequence[Priority]
) -> ColumnElement[Any]:
    return (
        select(func.sum(JobAttempt.cost_usd))
        .join(Job, Job.id == JobAttempt.job_id)
        .join(Batch, Batch.id == Job.batch_id)
        .where(owner, Batch.priority.in_(priorities))
        .where(JobAttempt.started_at >= start, JobAttempt.started_at < end)
        .scalar_subquery()
    )


async def evaluate(session: AsyncSession, amount: ColumnElement[Any]) -> Decimal:
    value = (await session.execute(select(func.coalesce(amount, 0)))).scalar_one()
    return Decimal(value)


async def open_reservations(
    session: AsyncSession, job_ids: Collection[uuid.UUID]
) -> list[dict[str, Any]]:
    """What the open attempts of these jobs reserved (read before their jobs are locked:
    `reserved` never changes once the attempt is made)."""
    if not job_ids:
        return []
    ids = bindparam(None, sorted(set(job_ids)), type_=ARRAY(Uuid()))
    query = select(JobAttempt.reserved).where(
        JobAttempt.job_id == any_(ids),
        JobAttempt.finished_at.is_(None),
        JobAttempt.reserved.is_not(None),
    )
    return [reserved for reserved in (await session.execute(query)).scalars() if reserved]


def _keys_in(keys: Iterable[LedgerKey]) -> ColumnElement[bool]:
    pairs = sorted(set(keys))
    if not pairs:
        return false()
    return tuple_(BudgetLedger.scope, BudgetLedger.period_start).in_(pairs)
