"""Response bodies of /v1/uploads (the request is a multipart form with one `file`)."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field


class UploadOut(BaseModel):
    id: uuid.UUID = Field(description="Name it in a job's `reference_images` or `mask`")
    content_type: str = Field(description="What the image decoded as: image/png, jpeg or webp")
    width: int
    height: int
    bytes: int
    created_at: datetime
