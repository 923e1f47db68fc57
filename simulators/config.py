"""The simulator's one configuration object, settable at start and patchable at runtime.

Every field has a default that makes the simulator an instant, faultless, unlimited
provider, so a test only states the behaviour it is about.
"""

from __future__ import annotations

import base64
import math
import random
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

# A fixed secret so that a test can verify signatures without asking for it first.
DEFAULT_WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"darkroom-provider-simulator-key!").decode()
MIB = 1024 * 1024

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


class FixedLatency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["fixed"] = "fixed"
    s: float = Field(0.0, ge=0)

    def sample(self, rng: random.Random) -> float:
        return self.s


class UniformLatency(BaseModel):
    model_config = ConfigDict(extra="forbid")
    kind: Literal["uniform"]
    low: float = Field(ge=0)
    high: float = Field(ge=0)

    def sample(self, rng: random.Random) -> float:
        return rng.uniform(self.low, self.high)


class LogNormalLatency(BaseModel):
    """Generation times are right-skewed: most near the median, a few much slower."""

    model_config = ConfigDict(extra="forbid")
    kind: Literal["lognormal"]
    median: float = Field(gt=0)
    sigma: float = Field(ge=0)

    def sample(self, rng: random.Random) -> float:
        return rng.lognormvariate(math.log(self.median), self.sigma)


Latency = Annotated[FixedLatency | UniformLatency | LogNormalLatency, Field(discriminator="kind")]


class SimConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    token: str = "sim-token"
    # Creation requests only (Replicate POST predictions, OpenAI POST images/generations).
    rate_per_s: float | None = Field(None, gt=0)
    burst: int = Field(1, ge=1)
    rate_limit_hint: Literal["retry_after", "body", "none"] = "retry_after"
    max_concurrent: int | None = Field(None, ge=0)
    latency: Latency = Field(default_factory=FixedLatency)
    # Fault injection: independent probabilities per creation request.
    error_500: Probability = 0.0
    error_502: Probability = 0.0
    error_503: Probability = 0.0
    reset: Probability = 0.0
    hang: Probability = 0.0
    malformed_json: Probability = 0.0
    not_image: Probability = 0.0
    huge_body: Probability = 0.0
    hang_s: float = Field(3600.0, ge=0)
    huge_body_bytes: int = Field(80 * MIB, ge=0)
    # Replicate webhooks.
    webhooks: bool = True
    webhook_secret: str = Field(DEFAULT_WEBHOOK_SECRET, pattern=r"^whsec_[A-Za-z0-9+/=]+$")
    webhook_retries: int = Field(3, ge=0)
    webhook_backoff_s: float = Field(0.2, ge=0)
    webhook_timeout_s: float = Field(5.0, gt=0)
    content_policy_word: str = "FORBIDDEN"
    # Replicate predictions that end `failed`, drawn at creation: the first
    # `failed_first` since reset, then each with probability `prediction_failed`. Of the
    # drawn ones, `failed_permanent` say the input can never work (NSFW, invalid input);
    # the others are transient (out of memory, a worker crash, a timeout, no reason).
    prediction_failed: Probability = 0.0
    failed_permanent: Probability = 0.0
    failed_first: int = Field(0, ge=0)
    # Predictions per page of GET /v1/predictions (Replicate's is 100).
    list_page_size: int = Field(100, ge=1, le=1000)
    # Seeds latency and fault draws (at start and at every reset) for repeatable runs.
    seed: int | None = None

    def patched(self, changes: dict[str, object]) -> SimConfig:
        """A validated copy with `changes` applied; the original is left untouched."""
        return SimConfig.model_validate({**self.model_dump(), **changes})


FAULT_KINDS = (
    "reset",
    "hang",
    "error_500",
    "error_502",
    "error_503",
    "malformed_json",
    "huge_body",
)
