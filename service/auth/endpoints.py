"""/v1/keys/current: what a key can do to itself."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter
from pydantic import BaseModel, Field

from service.auth.service import rotate_webhook_secret
from service.deps import ApiKeyDep, SessionDep
from service.kit.errors import ERROR_RESPONSES

router = APIRouter(prefix="/v1/keys", tags=["keys"], responses=ERROR_RESPONSES)


class RotatedWebhookSecret(BaseModel):
    webhook_secret: str = Field(
        description="The new whsec_ secret. Shown once: it is never returned again."
    )
    previous_secret_valid_until: datetime = Field(
        description="Until then every delivery carries two signatures, new and previous"
    )


@router.post("/current/rotate-webhook-secret")
async def rotate_secret(session: SessionDep, api_key: ApiKeyDep) -> RotatedWebhookSecret:
    """Make a new webhook secret for this key. For 24 h, deliveries are signed with both
    (`webhook-signature: v1,<new> v1,<previous>`), so receivers can switch without
    rejecting an event."""
    rotated = await rotate_webhook_secret(session, api_key)
    return RotatedWebhookSecret(
        webhook_secret=rotated.webhook_secret,
        previous_secret_valid_until=rotated.previous_valid_until,
    )
