from __future__ import annotations

import uuid

from sqlalchemy import ForeignKey, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from service.kit.base import Base, IdMixin, TimestampMixin


class PromptTemplate(IdMixin, TimestampMixin, Base):
    """One version of a key's stored prompt template (POST /v1/templates). Versions are
    never changed once written: a batch that named `name@version` can always be read
    back against the text it was rendered from."""

    __tablename__ = "prompt_templates"
    __table_args__ = (UniqueConstraint("api_key_id", "name", "version"),)

    api_key_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(100))
    version: Mapped[int]
    prompt: Mapped[str] = mapped_column(Text)
    negative_prompt: Mapped[str | None] = mapped_column(Text)
    output_name: Mapped[str | None] = mapped_column(Text)
