from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin


class WebhookEndpoint(IdMixin, TimestampMixin, Base):
    """One receiver of a key's outbox events (a callback_url, or a CMS a write-back goes to).

    Its health is what delivery is fair by and what disables it: `failing_since` is the
    first failure after the last success (a healthy endpoint has none), so an endpoint
    that has failed for five days straight is disabled, and one answering 410 at once.
    Events for a disabled endpoint are not sent."""

    __tablename__ = "webhook_endpoints"
    __table_args__ = (UniqueConstraint("api_key_id", "url"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    url: Mapped[str] = mapped_column(String(2000))
    disabled_at: Mapped[datetime | None]
    disabled_reason: Mapped[str | None] = mapped_column(Text)
    failing_since: Mapped[datetime | None]
    last_success_at: Mapped[datetime | None]
