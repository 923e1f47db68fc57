from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin


class OpenAIBatch(IdMixin, TimestampMixin, Base):
    """An OpenAI Batch API batch (`/openai/v1/batches`): one Darkroom batch underneath.

    Its status is read from the Darkroom batch; what OpenAI's shape needs besides is kept
    here: the input file, each input line's custom_id and how many jobs it made (line i
    owns the jobs after the previous lines' ones, in order), and the output and error
    files, written once when the Darkroom batch has finished (`finalized_at`)."""

    __tablename__ = "openai_batches"
    __table_args__ = (Index(None, "api_key_id", "created_at", "id"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    batch_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), unique=True
    )
    input_file_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("openai_files.id", ondelete="CASCADE")
    )
    endpoint: Mapped[str] = mapped_column(String(100))
    completion_window: Mapped[str] = mapped_column(String(20))
    metadata_: Mapped[dict[str, Any] | None] = mapped_column("metadata", JSONB)
    # [[custom_id, job count], ...] in input order.
    lines: Mapped[list[Any]] = mapped_column(JSONB)
    output_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("openai_files.id", ondelete="SET NULL")
    )
    error_file_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("openai_files.id", ondelete="SET NULL")
    )
    completed_count: Mapped[int] = mapped_column(default=0, server_default="0")
    failed_count: Mapped[int] = mapped_column(default=0, server_default="0")
    finalized_at: Mapped[datetime | None]
