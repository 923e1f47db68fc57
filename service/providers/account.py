"""What every provider account's configuration has, whatever API it speaks.

Each kind extends `AccountConfig` with its own keys (service.providers.<kind>); the
configuration file is validated against the kind an account names. Secrets never live in
the file: an account names the environment variable that holds its token (`token_env`).
"""

from __future__ import annotations

import os
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class Limits(BaseModel):
    """An account's limits, shared by every worker process on every host.

    `rate_per_s` paces submissions (GCRA, `burst` of them may go back to back);
    `max_concurrent` bounds generations in flight (a leased semaphore). None: no limit."""

    model_config = ConfigDict(extra="forbid")

    rate_per_s: Annotated[float, Field(gt=0)] | None = None
    burst: Annotated[int, Field(ge=1)] = 1
    max_concurrent: Annotated[int, Field(ge=1)] | None = None


class AccountConfig(BaseModel):
    """The keys every kind shares. A kind's config sets `kind` to a Literal of its name."""

    model_config = ConfigDict(extra="forbid")

    kind: str
    base_url: str = ""
    token_env: str | None = None
    limits: Limits = Limits()
    # One HTTP request to the provider may take this long (a synchronous generation too).
    timeout_s: Annotated[float, Field(gt=0)] = 120.0

    def token(self) -> str | None:
        return os.environ.get(self.token_env) if self.token_env else None

    def missing_env(self) -> list[str]:
        """The environment variables this account needs that are not set (its jobs would
        fail at the provider: a batch naming its models is refused instead)."""
        return [self.token_env] if self.token_env and self.token() is None else []
