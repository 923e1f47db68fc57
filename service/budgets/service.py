"""Key and account budgets: which apply to a job, reserving a claim's price against all
of them or none, and settling an attempt against exactly the ledgers it reserved in.

A budget's ledger row (scope, period) holds what has been spent or reserved in that
period. A claim group locks the ledgers of every budget that applies to its jobs (after
the batch rows, before the job rows, in (scope, period) order: deadlock-free), so that
concurrent workers reserve one after another and never past a limit. A group to which
no budget applies locks nothing.

Realtime work (batches of priority realtime) spends from a realtime allowance when one
is set, so bulk work cannot use up what a CMS needs for its covers; else it spends from
the shared limits like bulk work."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import ColumnElement
from sqlalchemy.ext.asyncio import AsyncSession

from service.budgets import repository
from service.budgets.repository import LedgerKey
from service.catalog.config import AccountBudget
from service.catalog.pricing import usd
from service.kit.base import utcnow
from service.models import Batch, JobAttempt, Priority
from service.models.budget import BudgetLedger, KeyBudget

# Where a transaction keeps the ledger rows it locked (settle reads them back).
_LOCKED = "budget_ledgers"


def day_start(now: datetime) -> date:
    return now.date()


def month_start(now: datetime) -> date:
    return now.date().replace(day=1)


def period_end(start: date, period: str) -> date:
    if period == "day":
        return start + timedelta(days=1)
    return (start.replace(day=28) + timedelta(days=4)).replace(day=1)


@dataclass(frozen=True)
class Limit:
    """One budget that applies to a job: its ledger, its limit, and how to say it."""

    key: LedgerKey
    period: str  # day | month
    usd: Decimal
    label: str  # "the API key's daily budget"
    # Whose spend seeds a ledger made mid-period: ("key", id) or ("account", name).
    owner: tuple[str, str]
    priorities: tuple[Priority, ...]

    @property
    def end(self) -> date:
        return period_end(self.key[1], self.period)

    def seed(self) -> ColumnElement[Any]:
        """What was already spent in the period (a budget set mid-month counts it)."""
        kind, owner = self.owner
        start = self.key[1]
        if kind == "key":
            return repository.spend_of_key(uuid.UUID(owner), start, self.end, self.priorities)
        return repository.spend_of_account(owner, start, self.end, self.priorities)


def _pick(
    owner: tuple[str, str],
    period: str,
    start: date,
    shared: Decimal | None,
    realtime: Decimal | None,
    priority: Priority,
    what: str,
) -> Limit | None:
    """The limit a job of `priority` spends from in one period: the realtime allowance
    for realtime work when one is set, else the shared limit."""
    kind, name = owner
    base = f"{kind}:{name}:{period}"
    period_word = "daily" if period == "day" else "monthly"
    if priority is Priority.realtime and realtime is not None:
        return Limit(
            (f"{base}:realtime", start),
            period,
            usd(realtime),
            f"{what}'s realtime {period_word} allowance",
            owner,
            (Priority.realtime,),
        )
    if shared is None:
        return None
    # With a realtime allowance, realtime work spends from it and not from here.
    priorities = (Priority.bulk,) if realtime is not None else (Priority.bulk, Priority.realtime)
    label = f"{what}'s {period_word} budget"
    return Limit((base, start), period, usd(shared), label, owner, priorities)


def key_limits(budget: KeyBudget | None, priority: Priority, now: datetime) -> list[Limit]:
    if budget is None:
        return []
    found = [_key_limit(budget, period, priority, now) for period in ("day", "month")]
    return [limit for limit in found if limit is not None]


def _key_limit(
    budget: KeyBudget, period: str, priority: Priority, now: datetime, *, shared: bool = True
) -> Limit | None:
    """The key's limit in this period for work of `priority` (`shared=False`: only its
    realtime allowance)."""
    daily = period == "day"
    return _pick(
        ("key", str(budget.api_key_id)),
        period,
        day_start(now) if daily else month_start(now),
        (budget.daily_usd if daily else budget.monthly_usd) if shared else None,
        budget.realtime_daily_usd if daily else budget.realtime_monthly_usd,
        priority,
        "the API key",
    )


def account_limits(
    account: str, budget: AccountBudget | None, priority: Priority, now: datetime
) -> list[Limit]:
    if budget is None:
        return []
    owner = ("account", account)
    found = _pick(
        owner,
        "month",
        month_start(now),
        budget.monthly_usd,
        budget.realtime_monthly_usd,
        priority,
        f"the {account} account",
    )
    return [found] if found is not None else []


# --- claims -----------------------------------------------------------------------------


@dataclass
class GroupBudgets:
    """A claim group's budgets: the limits of each job, their ledgers locked."""

    limits: dict[uuid.UUID, list[Limit]] = field(default_factory=dict)
    rows: dict[LedgerKey, BudgetLedger] = field(default_factory=dict)

    def refusal(self, job_id: uuid.UUID, price: Decimal) -> str | None:
        """Why this job's price does not fit, naming the first budget it would pass."""
        for limit in self.limits.get(job_id, []):
            spent = self.rows[limit.key].reserved_usd
            if spent + price > limit.usd:
                return (
                    f"{limit.label} of ${limit.usd:f} would be exceeded: "
                    f"${usd(spent):f} spent or reserved, this job costs ${usd(price):f}"
                )
        return None

    def reserve(self, job_id: uuid.UUID, price: Decimal) -> dict[str, Any] | None:
        """Add the price to every ledger of the job (after refusal() said it fits); what
        the attempt records, to be settled against exactly these ledgers."""
        limits = self.limits.get(job_id, [])
        if not limits:
            return None
        for limit in limits:
            self.rows[limit.key].reserved_usd += price
        ledgers = [[scope, period.isoformat()] for scope, period in (x.key for x in limits)]
        return {"usd": str(usd(price)), "ledgers": ledgers}


@dataclass(frozen=True)
class Want:
    """A job a group claims: its batch (key and priority) and the account it runs on."""

    job_id: uuid.UUID
    batch: Batch
    account: str
    # An open attempt may be left by a dead worker: its reservation is released.
    running: bool = False


async def lock_for_claims(
    session: AsyncSession, wants: Sequence[Want], accounts: Mapping[str, AccountBudget]
) -> GroupBudgets:
    """Work out the budgets of each claimed job and lock their ledgers (creating each
    missing one, seeded from the period's real spend). Nothing is locked when none
    applies."""
    now = utcnow()
    keys = {w.batch.api_key_id for w in wants}
    budgets = await repository.key_budgets(session, keys) if keys else {}
    group = GroupBudgets()
    for want in wants:
        priority = want.batch.priority
        group.limits[want.job_id] = key_limits(
            budgets.get(want.batch.api_key_id), priority, now
        ) + account_limits(want.account, accounts.get(want.account), priority, now)
    seeds = {limit.key: limit for limits in group.limits.values() for limit in limits}
    running = [w.job_id for w in wants if w.running]
    extra = _ledgers_of(await repository.open_reservations(session, running))
    group.rows = await _lock(session, set(seeds) | extra, seeds)
    return group


async def lock_reserved(session: AsyncSession, attempts: Iterable[JobAttempt]) -> None:
    """Lock the ledgers these attempts reserved in, before their outcomes settle them."""
    keys = _ledgers_of(a.reserved for a in attempts if a.reserved)
    await _lock(session, keys, {})


async def settle(session: AsyncSession, attempt: JobAttempt, cost: Decimal) -> None:
    """The attempt's reservation gives way to what it cost, in exactly the ledgers it
    reserved in (whatever the period is now). A ledger never goes below 0."""
    reserved = attempt.reserved
    if not reserved:
        return
    price = Decimal(str(reserved["usd"]))
    for key in sorted(_ledgers_of([reserved])):
        row = await _locked_row(session, key)
        if row is not None:
            row.reserved_usd = max(Decimal(0), row.reserved_usd - price) + cost


def _ledgers_of(reservations: Iterable[dict[str, Any]]) -> set[LedgerKey]:
    return {
        (str(scope), date.fromisoformat(str(period)))
        for reserved in reservations
        for scope, period in reserved.get("ledgers", [])
    }


async def _lock(
    session: AsyncSession, keys: set[LedgerKey], seeds: Mapping[LedgerKey, Limit]
) -> dict[LedgerKey, BudgetLedger]:
    if not keys:
        return {}
    locked = _locked_in(session)
    wanted = keys - set(locked)
    if wanted:
        existing = await repository.existing_ledgers(session, wanted)
        if existing >= wanted:
            locked.update(await repository.lock_ledgers(session, wanted))
        else:  # one at a time, in the same order, each created if missing
            for key in sorted(wanted):
                seed = seeds[key].seed() if key in seeds else None
                locked[key] = await repository.create_and_lock_ledger(session, key, seed)
    return {key: locked[key] for key in keys if key in locked}


async def _locked_row(session: AsyncSession, key: LedgerKey) -> BudgetLedger | None:
    """A ledger this transaction locked; one it did not (an attempt that was not known
    when the group locked) is locked now."""
    locked = _locked_in(session)
    if key not in locked:
        found = await repository.lock_ledgers(session, [key])
        if key not in found:
            return None
        locked.update(found)
    return locked[key]


def _locked_in(session: AsyncSession) -> dict[LedgerKey, BudgetLedger]:
    """The ledger rows this transaction holds locked (a later transaction of the same
    session holds none of them)."""
    transaction = session.sync_session.get_transaction()
    held: tuple[object, dict[LedgerKey, BudgetLedger]] | None = session.info.get(_LOCKED)
    if held is None or held[0] is not transaction:
        held = (transaction, {})
        session.info[_LOCKED] = held
    return held[1]


# --- the key's own view -----------------------------------------------------------------

LIMIT_FIELDS = ("daily_usd", "monthly_usd", "realtime_daily_usd", "realtime_monthly_usd")


@dataclass(frozen=True)
class Use:
    budget: str
    limit: Limit
    spent: Decimal


async def set_key_budget(
    session: AsyncSession, api_key_id: uuid.UUID, changes: Mapping[str, float | None]
) -> KeyBudget:
    """Set the fields given (None removes a limit); the others keep their value."""
    budget = await repository.lock_key_budget(session, api_key_id)
    for name, value in changes.items():
        if name in LIMIT_FIELDS:
            setattr(budget, name, usd(value) if value is not None else None)
    await session.flush()
    return budget


async def key_budget_uses(session: AsyncSession, budget: KeyBudget | None) -> list[Use]:
    """Each limit of the key in its current period, with what is spent or reserved."""
    if budget is None:
        return []
    now = utcnow()
    realtime = Priority.realtime
    picks = {
        "daily": _key_limit(budget, "day", Priority.bulk, now),
        "monthly": _key_limit(budget, "month", Priority.bulk, now),
        "realtime_daily": _key_limit(budget, "day", realtime, now, shared=False),
        "realtime_monthly": _key_limit(budget, "month", realtime, now, shared=False),
    }
    limits = {name: limit for name, limit in picks.items() if limit is not None}
    ledgers = await repository.read_ledgers(session, [limit.key for limit in limits.values()])
    uses: list[Use] = []
    for name, limit in limits.items():
        spent = ledgers.get(limit.key)
        if spent is None:  # no job has reserved yet: what the period's attempts cost
            spent = await repository.evaluate(session, limit.seed())
        uses.append(Use(name, limit, spent))
    return uses
