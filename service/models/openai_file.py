from __future__ import annotations

import uuid

from sqlalchemy import BigInteger, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin


class OpenAIFile(IdMixin, TimestampMixin, Base):
    """A file of the OpenAI-compatible door (`/openai/v1/files`): a batch's input JSONL
    that a caller uploaded, or the output and error JSONL Darkroom wrote for a batch.

    Owned by the API key that sent (or whose batch made) it. The bytes live in storage
    under `storage_key`; the row is what `GET /openai/v1/files/{id}` shows."""

    __tablename__ = "openai_files"
    __table_args__ = (Index(None, "api_key_id", "created_at", "id"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    # "batch" (an input), "batch_output" (an output or error file).
    purpose: Mapped[str] = mapped_column(String(40))
    filename: Mapped[str] = mapped_column(String(255))
    bytes: Mapped[int] = mapped_column(BigInteger)
    storage_key: Mapped[str] = mapped_column(String(300))
