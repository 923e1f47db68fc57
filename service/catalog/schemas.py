"""What /v1/models and /v1/routes show: each model's account, capabilities, price and
live health, and the routes that pick a model. Never a credential: whether an account's
token is set is shown as `available`, never the token nor where it comes from."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class SizesOut(BaseModel):
    """One form is given: aspect ratios, a range of sides, or a list of exact sizes."""

    model_config = ConfigDict(populate_by_name=True)

    aspect_ratios: list[str] | None = None
    min: int | None = None
    max: int | None = None
    multiple_of: int | None = None
    list_: list[str] | None = Field(default=None, alias="list")


class RangeOut(BaseModel):
    min: float | None = None
    max: float | None = None


class OptionOut(BaseModel):
    type: Literal["int", "float", "bool", "string"]
    min: float | None = None
    max: float | None = None
    values: list[Any] | None = Field(
        default=None, description="The only values allowed, when only some are"
    )
    description: str | None = None


class TokenPriceOut(BaseModel):
    input: float = Field(description="USD per 1M input tokens")
    output: float = Field(description="USD per 1M output tokens")


class PriceOut(BaseModel):
    """USD. Forms add up; most models use one (the others are 0)."""

    per_image: float
    per_megapixel: float
    per_second: float = Field(description="Per second of video made")
    per_run_second: float = Field(description="Per second of run time the provider reports")
    per_token: TokenPriceOut | None
    estimate: float | None = Field(
        description="What a job reserves against budgets before its usage is known"
    )


class ModelHealthOut(BaseModel):
    """The model's last attempts (at most the configured health window)."""

    attempts: int
    failures: int
    error_rate: float | None = Field(description="failures / attempts; null with no attempts")
    latency_ms_mean: float | None = Field(description="Mean latency of its successes")
    latency_ms_p50: int | None
    latency_ms_p95: int | None
    cooled_down: bool = Field(description="Failing too often: routes skip it for now")
    cooled_down_for_s: float = Field(description="Seconds of cooldown left (0: none)")


class ModelOut(BaseModel):
    name: str
    account: str = Field(description="The provider account that serves it")
    kind: str = Field(description="The API that account speaks")
    ref: str
    media: Literal["image", "video"]
    tasks: list[str]
    sizes: SizesOut | None = Field(description="null: any size the provider takes")
    max_reference_images: int
    inputs: list[Literal["reference", "mask"]] = Field(description="Input images it takes")
    negative_prompt: bool
    seed: bool
    durations: list[float] | RangeOut | None
    fps: list[int] | RangeOut | None
    resolutions: list[str] | None
    formats: list[str]
    options: dict[str, OptionOut] | None = Field(
        description="The options a job may pass; null: any pass through to the provider"
    )
    price: PriceOut
    charged_on_failure: bool
    fallbacks: list[str]
    max_attempts: int
    deadline_s: float
    available: bool = Field(description="Its account's credentials are set")
    health: ModelHealthOut


class ModelList(BaseModel):
    items: list[ModelOut]


class ConditionOut(BaseModel):
    """All that are given (not null) must hold."""

    has_reference_images: bool | None = None
    has_mask: bool | None = None
    media: Literal["image", "video"] | None = None
    task: str | None = None
    width_gt: int | None = None
    width_lt: int | None = None
    height_gt: int | None = None
    height_lt: int | None = None


class CandidateOut(BaseModel):
    model: str
    when: ConditionOut | None
    weight: float


class RouteOut(BaseModel):
    name: str
    strategy: Literal["first", "cheapest", "weighted"]
    candidates: list[CandidateOut]
    fallbacks: list[str]


class RouteList(BaseModel):
    items: list[RouteOut]
