"""Whether a model can do what a job asks, and what the job's parameters become for it.

`fit` is pure: submit-time validation (service.batches), route selection (a route takes
the first candidate that fits) and fallback chains (each fallback is fitted at submit,
so a hop never meets a model that cannot do the job) all use it.

What can be mapped is mapped, and recorded (`Fit.mapped`): a size to the nearest aspect
ratio of a model that takes ratios (refused beyond 5% off), to the nearest size of a
list (OpenAI's; refused beyond 25% off), or rounded to a multiple within a range
(ComfyUI's latent size).
What cannot is a Problem naming the field.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from service.catalog.config import TASKS, TYPE_NAMES, NumberRange, Option, Sizes, Task, is_of_type
from service.providers.base import MediaKind
from service.providers.registry import ModelSpec

# A size mapped to an aspect ratio may be this far off, no more.
MAX_RATIO_ERROR = 0.05
# A listed size (OpenAI's three) may be further off: 16:9 goes to 3:2 (18.5% off), but a
# ratio no listed size comes this close to (2:1, 21:9 on OpenAI) is refused.
MAX_LIST_RATIO_ERROR = 0.25
# Tasks that read reference images: a model with none of them takes no references.
REFERENCE_TASKS: frozenset[Task] = frozenset(
    {"image-to-image", "ip-adapter", "controlnet", "image-to-video"}
)
TEXT_TASKS: frozenset[Task] = frozenset({"text-to-image", "text-to-video"})


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
    # Whether the job set these; a default the model cannot make is mapped, not refused.
    duration_asked: bool = False
    fps_asked: bool = False
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
    """The job's parameters for this model, or every reason it cannot run it.

    A job for the wrong media gets that one problem, not also the task, format and video
    problems that follow from it."""
    name = spec.name
    problems: list[Problem] = []
    same_media = want.media == spec.media
    if not same_media:
        problems.append(Problem("media", f"model {name!r} makes {spec.media}s, not {want.media}s"))
    else:
        problems += _task(spec, want)
        if want.format not in spec.formats:
            problems.append(
                Problem(
                    "format",
                    f"model {name!r} makes {_either(sorted(spec.formats))}, not {want.format}",
                )
            )
    params: dict[str, Any] = {}
    mapped: dict[str, Any] = {}
    if same_media and want.media == "video":
        video_problems, params, mapped = _video(spec, want)
        problems += video_problems
    problems += _inputs(spec, want)
    if want.has_negative_prompt and not spec.negative_prompt:
        problems.append(Problem("negative_prompt", f"model {name!r} takes no negative prompt"))
    if want.seed_given and not spec.seed:
        problems.append(Problem("seed", f"model {name!r} takes no seed"))
    size_problems, size_params, size_mapped = _size(spec, want)
    problems += size_problems
    params.update(size_params)
    mapped.update(size_mapped)
    problems += _options(spec, want.options)
    if problems:
        return list(dict.fromkeys(problems))
    return Fit(params=params, mapped=mapped)


def task_problem(want: Want) -> Problem | None:
    """Why the task the job names contradicts its own inputs, whatever the model: an
    inpaint without a mask, an image-to-image without an image. A text task given
    reference images is refused too, rather than send images the task says to ignore
    (or a model would use anyway): the caller meant the image task, or sent them by
    mistake, and either way should say which. A task that is not named is implied by
    the inputs (task_of), so never contradicts them."""
    task = want.task
    if task == "inpaint" and not want.has_mask:
        return Problem("task", "inpaint needs a mask")
    if task in REFERENCE_TASKS and not want.references:
        return Problem("task", f"{task} needs a reference image")
    if task in TEXT_TASKS and want.references:
        instead = "image-to-video" if task == "text-to-video" else "image-to-image"
        return Problem("task", f"{task} takes no reference images; use {instead}")
    if task == "text-to-image" and want.has_mask:
        return Problem("task", "text-to-image takes no mask; use inpaint")
    return None


def _task(spec: ModelSpec, want: Want) -> list[Problem]:
    """A task the model lacks is blamed on the input that implied it (a reference image,
    a mask) when there is one; `_inputs` gives the same message, which `fit` dedupes.
    A task that contradicts the job's inputs is that one problem, whatever the model."""
    contradiction = task_problem(want)
    if contradiction is not None:
        return [contradiction]
    if want.task in spec.tasks:
        return []
    problems = []
    if want.references and not spec.tasks & REFERENCE_TASKS:
        problems.append(_no_references(spec))
    if want.has_mask and "inpaint" not in spec.tasks:
        problems.append(_no_mask(spec))
    if problems:
        return problems
    tasks = ", ".join(t for t in TASKS if t in spec.tasks)
    return [Problem("task", f"model {spec.name!r} does {tasks}, not {want.task}")]


def _inputs(spec: ModelSpec, want: Want) -> list[Problem]:
    problems = []
    most = spec.max_reference_images
    if want.references > most:
        if most == 0:
            problems.append(_no_references(spec))
        else:
            problems.append(
                Problem(
                    "reference_images",
                    f"model {spec.name!r} takes at most {_count(most, 'reference image')}, "
                    f"the job gives {want.references}",
                )
            )
    if want.has_mask and "mask" not in spec.inputs:
        problems.append(_no_mask(spec))
    return problems


def _no_references(spec: ModelSpec) -> Problem:
    return Problem("reference_images", f"model {spec.name!r} takes no reference images")


def _no_mask(spec: ModelSpec) -> Problem:
    return Problem("mask", f"model {spec.name!r} takes no mask")


# Sizes

# (problems, params, mapped)
_SizeFit = tuple[list[Problem], dict[str, Any], dict[str, Any]]


def _size(spec: ModelSpec, want: Want) -> _SizeFit:
    """(problems, params, mapped). `params` holds the size fields the model is sent: the
    aspect ratio for a model that takes ratios, else width and height for a model with
    sizes; nothing for a model that takes any size."""
    sizes = spec.sizes
    if sizes is None:
        return [], {}, {}
    asked = f"{want.width}x{want.height}"
    if want.width < 1 or want.height < 1:
        return [Problem("width", f"{asked} is not a size")], {}, {}
    if sizes.aspect_ratios is not None:
        return _to_ratio(spec.name, sizes, want.width, want.height)
    if sizes.list_ is not None:
        return _to_listed(spec.name, sizes, want.width, want.height)
    return _to_range(spec.name, sizes, want.width, want.height)


def _ratio_error(asked: float, ratio: float) -> float:
    """How far one ratio is from another, the same either way round (16:9 is 12.5% off 2:1,
    and 2:1 off 16:9)."""
    return math.exp(abs(math.log(asked / ratio))) - 1


def _to_ratio(name: str, sizes: Sizes, width: int, height: int) -> _SizeFit:
    asked = width / height
    ratios = sizes.ratios()
    label = f"{width}x{height} is {_ratio_name(width, height)}"
    if not ratios:
        return [Problem("width", f"{label}; model {name!r} takes no aspect ratio")], {}, {}
    best, value = min(ratios, key=lambda item: _ratio_error(asked, item[1]))
    error = _ratio_error(asked, value)
    if error > MAX_RATIO_ERROR:
        takes = ", ".join(r for r, _ in ratios)
        message = (
            f"{label}; model {name!r} takes the aspect ratios {takes}; "
            f"the nearest, {best}, is {_percent(error)} off"
        )
        return [Problem("width", message)], {}, {}
    return [], {"aspect_ratio": best}, {"size": {"asked": f"{width}x{height}", "sent": best}}


def _to_listed(name: str, sizes: Sizes, width: int, height: int) -> _SizeFit:
    """The listed size nearest in aspect ratio; of those as near, the nearest in area."""
    asked = width / height
    listed = sizes.exact()
    label = f"{width}x{height} is {_ratio_name(width, height)}"
    if not listed:
        return [Problem("width", f"{label}; model {name!r} takes no size")], {}, {}

    def distance(size: tuple[int, int]) -> tuple[float, float]:
        error = round(_ratio_error(asked, size[0] / size[1]), 9)
        return error, abs(math.log(size[0] * size[1] / (width * height)))

    w, h = min(listed, key=distance)
    error = _ratio_error(asked, w / h)
    if error > MAX_LIST_RATIO_ERROR:
        takes = ", ".join(f"{a}x{b}" for a, b in listed)
        message = (
            f"{label}; model {name!r} takes the sizes {takes}; "
            f"the nearest, {w}x{h}, is {_percent(error)} off in aspect ratio"
        )
        return [Problem("width", message)], {}, {}
    return [], {"width": w, "height": h}, _mapped(width, height, w, h)


def _to_range(name: str, sizes: Sizes, width: int, height: int) -> _SizeFit:
    """Each side to the nearest multiple (half up) that lies within min..max. A side more
    than half a multiple past a bound is refused: no multiple of the range is near it."""
    multiple = sizes.multiple_of or 1
    low, high = sizes.multiples_within()
    problems = []
    sent = []
    for side, value in (("width", width), ("height", height)):
        # Twice over, to compare with half a multiple in integers.
        below = sizes.min is not None and 2 * value < 2 * sizes.min - multiple
        above = sizes.max is not None and 2 * value > 2 * sizes.max + multiple
        bounds = _bounds(sizes.min, sizes.max, "")
        if below or above:
            problems.append(Problem(side, f"{side} {value} must be {bounds} for model {name!r}"))
            continue
        if high is not None and low > high:
            message = f"model {name!r} has no {side} {bounds} that is a multiple of {multiple}"
            problems.append(Problem(side, message))
            continue
        rounded = max(low, (2 * value + multiple) // (2 * multiple) * multiple)
        sent.append(rounded if high is None else min(high, rounded))
    if problems:
        return problems, {}, {}
    w, h = sent
    return [], {"width": w, "height": h}, _mapped(width, height, w, h)


def _mapped(width: int, height: int, w: int, h: int) -> dict[str, Any]:
    if (w, h) == (width, height):
        return {}
    return {"size": {"asked": f"{width}x{height}", "sent": f"{w}x{h}"}}


def _ratio_name(width: int, height: int) -> str:
    """16:9 for 1920x1080; a ratio with no short name is given as a decimal (1.34:1)."""
    gcd = math.gcd(width, height)
    w, h = width // gcd, height // gcd
    if w <= 64 and h <= 64:
        return f"{w}:{h}"
    return f"{width / height:.2f}:1"


def _percent(error: float) -> str:
    return f"{error * 100:.1f}%".replace(".0%", "%")


# Video


def _video(spec: ModelSpec, want: Want) -> _SizeFit:
    """(problems, params, mapped). A duration or fps the job did not set (the default) is
    mapped to the nearest the model makes: a job that asks nothing must not be refused
    for a default it never chose. One the job set is refused if the model cannot make it."""
    name = spec.name
    problems = []
    params: dict[str, Any] = {}
    mapped: dict[str, Any] = {}
    fields = (
        ("duration_s", want.duration_s, want.duration_asked, spec.durations, "of", " s"),
        ("fps", want.fps, want.fps_asked, spec.fps, "at", " fps"),
    )
    for key, value, asked, allowed, word, unit in fields:
        if value is None or allowed is None or _allowed(value, allowed):
            continue
        sent = None if asked else _nearest(value, allowed, whole=key == "fps")
        if sent is not None:
            params[key] = sent
            mapped[key] = {"asked": None, "sent": sent}
            continue
        shown = f"{_num(value)}{unit}" if asked else f"the default {_num(value)}{unit}"
        takes = _takes(allowed, unit)
        problems.append(Problem(key, f"model {name!r} makes clips {word} {takes}, not {shown}"))
    if (
        want.resolution is not None
        and spec.resolutions is not None
        and want.resolution not in spec.resolutions
    ):
        problems.append(
            Problem(
                "resolution",
                f"model {name!r} makes {_either(sorted(spec.resolutions, key=_res_key))}, "
                f"not {want.resolution}",
            )
        )
    return problems, params, mapped


def _nearest(value: float, allowed: Sequence[float] | NumberRange, *, whole: bool) -> float | None:
    """The allowed value nearest `value`: of a list, the larger of two as near; of a range,
    the bound it lies past (whole: the whole number within it). None when there is none."""
    if not isinstance(allowed, NumberRange):
        return min(allowed, key=lambda a: (abs(a - value), -a), default=None)
    low, high = allowed.min, allowed.max
    if whole:
        low = math.ceil(low) if low is not None else None
        high = math.floor(high) if high is not None else None
    if low is not None and high is not None and low > high:
        return None
    if low is not None and value < low:
        return low
    if high is not None and value > high:
        return high
    return value


def _allowed(value: float, allowed: Iterable[float] | NumberRange | None) -> bool:
    if allowed is None:
        return True
    if isinstance(allowed, NumberRange):
        return _in_range(value, allowed.min, allowed.max)
    return any(math.isclose(value, a, rel_tol=1e-9) for a in allowed)


def _takes(allowed: Iterable[float] | NumberRange | None, unit: str) -> str:
    if isinstance(allowed, NumberRange):
        return _bounds(allowed.min, allowed.max, unit)
    return _either([_num(a) for a in sorted(allowed or [])]) + unit


def _res_key(resolution: str) -> int:
    return int(resolution.rstrip("p"))


# Options


def _options(spec: ModelSpec, options: Mapping[str, Any]) -> list[Problem]:
    """Checked only when the model declares its options; else they pass through as given."""
    if spec.options is None:
        return []
    problems = []
    for key, value in options.items():
        option = spec.options.get(key)
        field_name = f"options.{key}"
        if option is None:
            takes = ", ".join(sorted(spec.options))
            more = f"it takes: {takes}" if takes else "it takes no options"
            message = f"model {spec.name!r} takes no option {_short(key)}; {more}"
            problems.append(Problem(field_name, message))
            continue
        why = _option_problem(option, value)
        if why is not None:
            problems.append(Problem(field_name, f"model {spec.name!r} takes {_short(key)} {why}"))
    return problems


def _option_problem(option: Option, value: Any) -> str | None:
    """Why `value` is not what `option` takes, or None."""
    if not is_of_type(option.type, value):
        return f"as {TYPE_NAMES[option.type]}; the job gives {_short(value)}"
    if option.type in ("int", "float") and not _in_range(value, option.min, option.max):
        return f"{_bounds(option.min, option.max, '')}; the job gives {_short(value)}"
    if option.values is not None and not any(
        is_of_type(option.type, v) and v == value for v in option.values
    ):
        allowed = ", ".join(_short(v) for v in option.values)
        return f"as one of {allowed}; the job gives {_short(value)}"
    return None


# Wording


def _in_range(value: float, low: float | None, high: float | None) -> bool:
    return (low is None or value >= low) and (high is None or value <= high)


def _bounds(low: float | None, high: float | None, unit: str) -> str:
    if low is not None and high is not None:
        return f"between {_num(low)} and {_num(high)}{unit}"
    if low is not None:
        return f"at least {_num(low)}{unit}"
    if high is not None:
        return f"at most {_num(high)}{unit}"
    return f"any{unit}"


def _num(value: float) -> str:
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return str(value)


def _either(items: list[str]) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return f"{', '.join(items[:-1])} or {items[-1]}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _short(value: Any) -> str:
    """A job's value in a message, cut short: a message must not echo a megabyte back."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
