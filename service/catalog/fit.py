"""Whether a model can do what a job asks, and what the job's parameters become for it.

`fit` is pure: submit-time validation (service.batches), route selection (a route takes
the first candidate that fits) and fallback chains (each fallback is fitted at submit,
so a hop never meets a model that cannot do the job) all use it.

What can be mapped is mapped, and recorded (`Fit.mapped`): a size to the nearest aspect
ratio of a model that takes ratios (refused beyond 5% off), to the nearest size of a
list (OpenAI's), or rounded to a multiple within a range (ComfyUI's latent size).
What cannot is a Problem naming the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.catalog.config import Task
from service.providers.base import MediaKind
from service.providers.registry import ModelSpec

# A size mapped to an aspect ratio or a listed size may be this far off, no more.
MAX_RATIO_ERROR = 0.05


@dataclass(frozen=True)
class Want:
    """What one job asks for, before any model is chosen (defaults applied)."""

    media: MediaKind
    task: Task
    width: int
    height: int
    format: str
    duration_s: float | None = None
    fps: int | None = None
    resolution: str | None = None
    has_negative_prompt: bool = False
    # The job set a seed (an unseeded job gets one anyway; only an asked one is checked).
    seed_given: bool = False
    # Reference images, a chained parent's output included.
    references: int = 0
    has_mask: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Problem:
    """`field` is the job's field ("width", "options.steps"); the caller prefixes jobs[i]."""

    field: str
    message: str


@dataclass(frozen=True)
class Fit:
    """`params`: the job parameters this model needs set (width, height, aspect_ratio, ...);
    `mapped`: what was changed from what the job asked, e.g.
    {"size": {"asked": "1920x1080", "sent": "16:9"}}."""

    params: dict[str, Any]
    mapped: dict[str, Any]


def task_of(
    media: MediaKind, *, references: int, has_mask: bool, asked: Task | None = None
) -> Task:
    """The task a job performs: the one it names, else what its inputs imply."""
    if asked is not None:
        return asked
    if media == "video":
        return "image-to-video" if references else "text-to-video"
    if has_mask:
        return "inpaint"
    return "image-to-image" if references else "text-to-image"


def fit(spec: ModelSpec, want: Want) -> Fit | list[Problem]:
    """The job's parameters for this model, or every reason it cannot run it."""
    raise NotImplementedError("service.catalog.fit is being written (issue 10)")
