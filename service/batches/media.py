"""A job's media, video fields, input images and chain, resolved at submit. Whether its
model can do what it asks is service.catalog.fit's to say (service.batches.routing)."""

from __future__ import annotations

from typing import Any

from service.batches.schemas import JobCreate, JobFields
from service.kit.errors import ErrorDetail
from service.providers.base import DEFAULT_FORMAT, MEDIA_OF_FORMAT, MediaKind
from service.providers.registry import ModelSpec

RESOLUTIONS: dict[str, tuple[int, int]] = {
    "480p": (854, 480),
    "720p": (1280, 720),
    "1080p": (1920, 1080),
}
DEFAULT_VIDEO_DURATION_S = 4.0
DEFAULT_VIDEO_FPS = 24


def implied_media(job: JobCreate, defaults: JobFields, spec: ModelSpec | None) -> MediaKind:
    """What the job makes: what it asks, else what its model makes; a job on a route (no
    model yet) makes a video when it gives a video's fields, else an image."""
    asked: MediaKind | None = job.media or defaults.media
    if asked is not None:
        return asked
    if spec is not None:
        return spec.media
    video_fields = ("duration_s", "fps", "resolution")
    given = any(
        getattr(job, name) is not None or getattr(defaults, name) is not None
        for name in video_fields
    )
    return "video" if given else "image"


def resolve_media(
    index: int,
    job: JobCreate,
    defaults: JobFields,
    media: MediaKind,
    params: dict[str, Any],
    default_format: str,
) -> list[ErrorDetail]:
    """Fill `params` with the job's media fields and input images; return what is wrong
    with them whatever the model (what a model cannot do, service.catalog.fit says)."""
    where = f"jobs[{index}]"
    errors: list[ErrorDetail] = []
    fmt: str | None = job.format or defaults.format
    if fmt is None:
        configured = MEDIA_OF_FORMAT.get(default_format) == media
        fmt = default_format if configured else DEFAULT_FORMAT[media]
    if MEDIA_OF_FORMAT[fmt] != media:
        errors.append(
            ErrorDetail(field=f"{where}.format", message=f"{fmt} is not a {media} format")
        )
    params["format"] = fmt
    if media == "video":
        params["media"] = "video"
        params["duration_s"] = _first(job.duration_s, defaults.duration_s, DEFAULT_VIDEO_DURATION_S)
        params["fps"] = _first(job.fps, defaults.fps, DEFAULT_VIDEO_FPS)
        resolution = job.resolution or defaults.resolution
        if resolution is not None and job.width is None and job.height is None:
            params["width"], params["height"] = RESOLUTIONS[resolution]
    else:
        for name in ("duration_s", "fps", "resolution"):
            if getattr(job, name) is not None:
                errors.append(ErrorDetail(field=f"{where}.{name}", message="only a video has this"))
    for name in ("negative_prompt", "options"):
        value = getattr(job, name) if getattr(job, name) is not None else getattr(defaults, name)
        if value is not None:
            params[name] = value
    if job.reference_images:
        params["reference_images"] = list(job.reference_images)
    if job.mask is not None:
        params["mask"] = job.mask
    return errors


def check_chains(jobs: list[JobCreate], medias: list[str]) -> list[ErrorDetail]:
    """Each `input.job` names another job of the batch that makes an image, and no chain
    loops back on itself."""
    errors: list[ErrorDetail] = []
    parents: dict[int, int] = {}
    for index, job in enumerate(jobs):
        if job.input is None:
            continue
        parent = job.input.job
        field = f"jobs[{index}].input.job"
        if parent >= len(jobs):
            errors.append(
                ErrorDetail(field=field, message=f"no job {parent}: the batch has {len(jobs)}")
            )
        elif parent == index:
            errors.append(ErrorDetail(field=field, message="a job cannot take its own output"))
        elif medias[parent] != "image":
            errors.append(
                ErrorDetail(field=field, message=f"job {parent} makes a video, not an image")
            )
        else:
            parents[index] = parent
    for start in parents:
        seen = {start}
        node = parents.get(start)
        while node is not None:
            if node in seen:
                errors.append(
                    ErrorDetail(
                        field=f"jobs[{start}].input.job",
                        message=f"the chain from job {start} loops back to job {node}",
                    )
                )
                break
            seen.add(node)
            node = parents.get(node)
    return errors


def _first(*values: Any) -> Any:
    return next(value for value in values if value is not None)
