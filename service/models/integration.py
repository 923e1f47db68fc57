from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, func
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin, utcnow


class Integration(IdMixin, TimestampMixin, Base):
    """A CMS (or any signed sender) whose webhooks become cover-image jobs.

    `inbound` holds what the kind's check_inbound returned, secrets included: they are
    needed to verify every delivery. The API never returns them and nothing logs them."""

    __tablename__ = "integrations"
    __table_args__ = (Index(None, "api_key_id", "created_at", "id"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(40))
    # null: the kind's default (publish) events.
    events: Mapped[list[str] | None] = mapped_column(JSONB)
    inbound: Mapped[dict[str, Any]] = mapped_column(JSONB)
    template: Mapped[dict[str, Any]] = mapped_column(JSONB)
    writeback: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    callback_url: Mapped[str | None] = mapped_column(String(2000))
    # Contentful: which locale of each field the template reads.
    locale: Mapped[str | None] = mapped_column(String(35))
    # Deliveries refused for a bad, missing or stale signature: counted, nothing else kept.
    rejected_count: Mapped[int] = mapped_column(default=0, server_default="0")
    updated_at: Mapped[datetime] = mapped_column(
        server_default=func.now(), default=utcnow, onupdate=utcnow
    )

    @property
    def read_locale(self) -> str | None:
        """Which locale of each field to read (Contentful): the integration's own setting,
        else its write-back's, so one setting serves both ways."""
        if self.locale:
            return self.locale
        locale = (self.writeback or {}).get("locale")
        return locale if isinstance(locale, str) else None
