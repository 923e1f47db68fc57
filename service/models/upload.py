from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin


class Upload(IdMixin, TimestampMixin, Base):
    """An image a caller sent to feed into jobs (a reference image, a mask).

    Owned by the API key that sent it, like a batch: another key cannot see it or name it
    in a job. The bytes live in storage under `storage_key`; the row records what the
    decode found, so a job's input is never taken on the caller's word."""

    __tablename__ = "uploads"
    __table_args__ = (Index(None, "api_key_id", "created_at", "id"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    storage_key: Mapped[str] = mapped_column(String(300))
    content_type: Mapped[str] = mapped_column(String(40))
    width: Mapped[int]
    height: Mapped[int]
    bytes: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
