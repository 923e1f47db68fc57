from __future__ import annotations

import uuid
from datetime import date
from decimal import Decimal

from sqlalchemy import Date, ForeignKey, Numeric, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, TimestampMixin


class KeyBudget(TimestampMixin, Base):
    """What an API key may spend per UTC day and month (POST /v1/keys/current/budget).
    Realtime work spends from its own allowance when one is set, so bulk work cannot use
    up what a CMS needs for its covers."""

    __tablename__ = "key_budgets"

    api_key_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True
    )
    daily_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    monthly_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    realtime_daily_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))
    realtime_monthly_usd: Mapped[Decimal | None] = mapped_column(Numeric(12, 6))


class BudgetLedger(Base):
    """What has been spent or reserved against one budget in one period. A claim locks
    the ledgers of every budget that applies to its job and reserves in all of them, or
    in none (service.budgets)."""

    __tablename__ = "budget_ledgers"

    # "key:<api key id>:day", "key:<id>:month:realtime", "account:<name>:month", ...
    scope: Mapped[str] = mapped_column(String(300), primary_key=True)
    period_start: Mapped[date] = mapped_column(Date, primary_key=True)
    reserved_usd: Mapped[Decimal] = mapped_column(
        Numeric(14, 6), default=Decimal(0), server_default="0"
    )
