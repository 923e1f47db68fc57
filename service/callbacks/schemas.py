"""Bodies of /v1/callbacks."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


class CallbackAck(BaseModel):
    """accepted: the job will be finished with this result; pending: the generation has
    not finished yet; ignored: no running job waits for this generation (a repeat, or a
    job that already finished by polling)."""

    status: Literal["accepted", "pending", "ignored"]
