"""What each model can do and costs, the routes that pick a model, and the budgets: the
`models:`, `routes:`, `budgets:` and `health:` parts of the configuration file (a
contract: later tooling writes these files, so the keys are kept as written).

Every capability is optional. A model that declares nothing takes what its provider
account can take (service.providers.registry resolves the defaults)."""

from __future__ import annotations

import math
import re
from decimal import Decimal
from typing import Annotated, Any, Literal, Self, get_args

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
    model_validator,
)

from service.providers.base import MediaKind, OutputFormat

Task = Literal[
    "text-to-image",
    "image-to-image",
    "inpaint",
    "controlnet",
    "ip-adapter",
    "text-to-video",
    "image-to-video",
]
TASKS: tuple[Task, ...] = get_args(Task)
VIDEO_TASKS = frozenset({"text-to-video", "image-to-video"})
ResolutionName = Literal["480p", "720p", "1080p"]
Usd = Annotated[Decimal, Field(ge=0, max_digits=14, decimal_places=6)]
_RATIO = re.compile(r"^([1-9][0-9]{0,2}):([1-9][0-9]{0,2})$")
_SIZE = re.compile(r"^([1-9][0-9]{1,4})x([1-9][0-9]{1,4})$")


TYPE_NAMES = {
    "int": "an integer",
    "float": "a number",
    "bool": "true or false",
    "string": "a string",
}


def is_of_type(kind: str, value: Any) -> bool:
    """Whether `value` is what an option of this type takes (true is no integer; an
    integer is a number)."""
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))
    if kind == "string":
        return isinstance(value, str)
    return False


class _Strict(BaseModel):
    # inf and NaN pass every bound (a cooldown of inf never ends; NaN never compares), so
    # no float of the file may be either.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class Sizes(_Strict):
    """One of three forms: aspect ratios ("16:9"), a range of sides (min/max, in pixels,
    and a multiple every side is rounded to), or a list of exact sizes ("1024x1024")."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, populate_by_name=True, allow_inf_nan=False
    )

    aspect_ratios: list[str] | None = None
    min: Annotated[int, Field(ge=1)] | None = None
    max: Annotated[int, Field(ge=1)] | None = None
    multiple_of: Annotated[int, Field(ge=1, le=512)] | None = None
    list_: list[str] | None = Field(default=None, alias="list")

    @model_validator(mode="after")
    def _one_form(self) -> Self:
        forms = [
            self.aspect_ratios is not None,
            self.list_ is not None,
            any(v is not None for v in (self.min, self.max, self.multiple_of)),
        ]
        if sum(forms) != 1:
            raise ValueError("give one of: aspect_ratios, list, or min/max/multiple_of")
        for ratio in self.aspect_ratios or []:
            if not _RATIO.match(ratio):
                raise ValueError(f"aspect ratio {ratio!r} is not W:H (e.g. 16:9)")
        for size in self.list_ or []:
            if not _SIZE.match(size):
                raise ValueError(f"size {size!r} is not WxH (e.g. 1024x1024)")
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError("min is larger than max")
        multiple = self.multiple_of or 1
        if self.max is not None and multiple > self.max:
            raise ValueError(f"multiple_of {multiple} is larger than max {self.max}")
        low, high = self.multiples_within()
        if high is not None and low > high:
            raise ValueError(f"no multiple of {multiple} lies between {self.min} and {self.max}")
        return self

    def multiples_within(self) -> tuple[int, int | None]:
        """The smallest and largest multiple of `multiple_of` within min..max (no max:
        None): the sides a range can send."""
        multiple = self.multiple_of or 1
        low = -(-(self.min or 1) // multiple) * multiple
        high = self.max // multiple * multiple if self.max is not None else None
        return low, high

    def ratios(self) -> list[tuple[str, float]]:
        return [(ratio, w / h) for ratio, w, h in _pairs(self.aspect_ratios, _RATIO)]

    def exact(self) -> list[tuple[int, int]]:
        return [(w, h) for _, w, h in _pairs(self.list_, _SIZE)]


def _pairs(texts: list[str] | None, pattern: re.Pattern[str]) -> list[tuple[str, int, int]]:
    """Each text (already validated against `pattern`) with its two numbers."""
    out = []
    for text in texts or []:
        match = pattern.match(text)
        assert match is not None
        out.append((text, int(match.group(1)), int(match.group(2))))
    return out


class NumberRange(_Strict):
    min: Annotated[float, Field(gt=0)] | None = None
    max: Annotated[float, Field(gt=0)] | None = None

    @field_validator("max")
    @classmethod
    def _not_below_min(cls, value: float | None, info: ValidationInfo) -> float | None:
        low = info.data.get("min")
        if value is not None and low is not None and low > value:
            raise ValueError(f"max {value:g} is below min {low:g}")
        return value


def _list_or_range(value: Any) -> str:
    return "list" if isinstance(value, list) else "range"


# A list of the values allowed, or a range. Tagged, so that an error names the one form
# the file gives (durations.range.max), not also the other.
Durations = Annotated[
    Annotated[list[Annotated[float, Field(gt=0)]], Field(min_length=1), Tag("list")]
    | Annotated[NumberRange, Tag("range")],
    Discriminator(_list_or_range),
]
FpsValues = Annotated[
    Annotated[list[Annotated[int, Field(ge=1)]], Field(min_length=1), Tag("list")]
    | Annotated[NumberRange, Tag("range")],
    Discriminator(_list_or_range),
]


class Option(_Strict):
    """A model-specific parameter a job may pass in `options`."""

    type: Literal["int", "float", "bool", "string"]
    min: float | None = None
    max: float | None = None
    # The values allowed, when only some are.
    values: Annotated[list[Any], Field(min_length=1)] | None = None
    description: str | None = None

    @field_validator("min", "max")
    @classmethod
    def _bounds_are_for_numbers(cls, value: float | None, info: ValidationInfo) -> float | None:
        kind = info.data.get("type")
        if value is not None and kind in ("bool", "string"):
            raise ValueError(f"a {kind} option has no {info.field_name}")
        low = info.data.get("min")
        if info.field_name == "max" and value is not None and low is not None and low > value:
            raise ValueError(f"max {value:g} is below min {low:g}")
        return value

    @field_validator("values")
    @classmethod
    def _values_are_of_the_type(
        cls, values: list[Any] | None, info: ValidationInfo
    ) -> list[Any] | None:
        kind = info.data.get("type")
        low, high = info.data.get("min"), info.data.get("max")
        for value in values or []:
            if kind is not None and not is_of_type(kind, value):
                raise ValueError(f"{value!r} is not {TYPE_NAMES[kind]}, as the option's type says")
            if kind not in ("int", "float"):
                continue
            if (low is not None and value < low) or (high is not None and value > high):
                raise ValueError(f"{value!r} is outside min..max")
        return values


class TokenPrice(_Strict):
    """USD per 1M tokens."""

    input: Usd = Decimal(0)
    output: Usd = Decimal(0)


class Price(_Strict):
    """Forms add up; most models use one. Usage-based forms (per_run_second, per_token)
    are charged from what the provider reports; `estimate` is what a job reserves
    against budgets before that is known."""

    per_image: Usd = Decimal(0)
    per_megapixel: Usd = Decimal(0)
    # Videos: one second of output.
    per_second: Usd = Decimal(0)
    # The provider's reported run time (Replicate's metrics.predict_time).
    per_run_second: Usd = Decimal(0)
    per_token: TokenPrice | None = None
    estimate: Usd | None = None

    @property
    def usage_based(self) -> bool:
        return bool(self.per_run_second) or self.per_token is not None


class ModelConfig(_Strict):
    provider: str
    ref: str
    price: Price = Price()
    # What the model makes; a job that names it makes that.
    media: MediaKind = "image"
    tasks: list[Task] | None = None
    sizes: Sizes | None = None
    max_reference_images: Annotated[int, Field(ge=0, le=8)] | None = None
    negative_prompt: bool = True
    seed: bool = True
    # Videos
    durations: Durations | None = None
    fps: FpsValues | None = None
    resolutions: list[ResolutionName] | None = None
    formats: list[OutputFormat] | None = None
    # Not given: any options pass through to the provider as given; given: only these.
    options: dict[str, Option] | None = None
    # Where each job field goes in the provider's request (ComfyUI: "node id.input name"
    # per field: prompt, negative_prompt, seed, width, height, reference_image, mask).
    inject: dict[str, str] = {}
    # Attempts that count (errors; never 429s) before the job fails or falls back.
    max_attempts: Annotated[int, Field(ge=1, le=100)] = 3
    # An asynchronous generation still unfinished after this long is cancelled and failed.
    deadline_s: Annotated[float, Field(gt=0)] = 900.0
    # Whether the provider bills a generation that ran and failed (never one it aborted).
    charged_on_failure: bool = False
    fallbacks: list[str] = []

    @field_validator("tasks")
    @classmethod
    def _tasks_of_the_media(
        cls, tasks: list[Task] | None, info: ValidationInfo
    ) -> list[Task] | None:
        media = info.data.get("media")
        for task in tasks or []:
            if media is not None and (task in VIDEO_TASKS) != (media == "video"):
                kind = "a video" if task in VIDEO_TASKS else "an image"
                raise ValueError(f"{task} is {kind} task; this model makes {media}s")
        return tasks

    @field_validator("fps")
    @classmethod
    def _a_whole_fps(cls, fps: list[int] | NumberRange | None) -> list[int] | NumberRange | None:
        if isinstance(fps, NumberRange) and fps.min is not None and fps.max is not None:
            if math.ceil(fps.min) > math.floor(fps.max):
                raise ValueError(f"no whole fps lies between {fps.min:g} and {fps.max:g}")
        return fps


class Condition(_Strict):
    """All that are given must hold."""

    has_reference_images: bool | None = None
    has_mask: bool | None = None
    media: MediaKind | None = None
    task: Task | None = None
    width_gt: int | None = None
    width_lt: int | None = None
    height_gt: int | None = None
    height_lt: int | None = None


class Candidate(_Strict):
    model: str
    when: Condition | None = None
    # strategy: weighted: the share of jobs this candidate gets among those that fit.
    weight: Annotated[float, Field(gt=0)] = 1.0


class RouteConfig(_Strict):
    strategy: Literal["first", "cheapest", "weighted"] = "first"
    candidates: Annotated[list[Candidate], Field(min_length=1)]
    fallbacks: list[str] = []


class AccountBudget(_Strict):
    monthly_usd: Usd | None = None
    # Realtime work (CMS covers) spends from this allowance instead, so bulk work cannot
    # use up what they need.
    realtime_monthly_usd: Usd | None = None


class Budgets(_Strict):
    accounts: dict[str, AccountBudget] = {}


class Health(_Strict):
    """A model failing `threshold` of its last `window` attempts (once it has at least
    `min_attempts` of them) is cooled down for `cooldown_s`: routes skip it."""

    window: Annotated[int, Field(ge=1, le=1000)] = 20
    threshold: Annotated[float, Field(gt=0, le=1)] = 0.5
    min_attempts: Annotated[int, Field(ge=1)] = 10
    cooldown_s: Annotated[float, Field(gt=0)] = 60.0


def check_names(
    models: dict[str, ModelConfig],
    routes: dict[str, RouteConfig],
    budgets: Budgets,
    providers: set[str],
) -> None:
    """Every name a model, route or budget gives exists; raises ValueError with the path."""
    for name, model in models.items():
        if model.provider not in providers:
            raise ValueError(
                f"models.{name}.provider: unknown provider {model.provider!r}; "
                f"known: {sorted(providers)}"
            )
        for n, fallback in enumerate(model.fallbacks):
            if fallback not in models:
                raise ValueError(f"models.{name}.fallbacks[{n}]: unknown model {fallback!r}")
            if fallback == name:
                raise ValueError(
                    f"models.{name}.fallbacks[{n}]: a model cannot fall back to itself"
                )
    for name, route in routes.items():
        if name in models:
            raise ValueError(f"routes.{name}: a model has this name; a route needs its own")
        for n, candidate in enumerate(route.candidates):
            if candidate.model not in models:
                raise ValueError(
                    f"routes.{name}.candidates[{n}].model: unknown model {candidate.model!r}"
                )
        for n, fallback in enumerate(route.fallbacks):
            if fallback not in models:
                raise ValueError(f"routes.{name}.fallbacks[{n}]: unknown model {fallback!r}")
    for account in budgets.accounts:
        if account not in providers:
            raise ValueError(f"budgets.accounts.{account}: unknown provider account")
