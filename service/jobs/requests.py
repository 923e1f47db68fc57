"""What a job asks its provider for, built from the job row (never from a request body)."""

from __future__ import annotations

from urllib.parse import quote

from service.jobs import repository
from service.jobs.inputs import resolve_inputs
from service.jobs.transitions import StartedJob
from service.providers.base import (
    GenerationRequest,
    InputImage,
    ProviderPermanentError,
    ProviderRetryableError,
)
from service.providers.registry import ModelSpec
from service.state import State
from service.storage.base import StorageError


def callback_url(state: State, account: str) -> str | None:
    """Where the account's provider reports completions: /v1/callbacks/{account}, when the
    service has a public base URL and the provider calls back at all."""
    base = state.settings.provider_callback_base
    provider = state.registry.providers.get(account)
    if base is None or provider is None or not provider.capabilities.callbacks:
        return None
    return f"{base}/v1/callbacks/{quote(account, safe='')}"


async def generation_request(
    state: State, spec: ModelSpec, started: StartedJob, *, with_inputs: bool = True
) -> GenerationRequest:
    """`with_inputs`: read the job's input images (a submission needs them; fetching a
    finished generation's output does not)."""
    params = started.params
    inputs = await job_inputs(state, started) if with_inputs else ()
    return GenerationRequest(
        prompt=started.prompt,
        model_ref=spec.ref,
        width=params["width"],
        height=params["height"],
        format=params["format"],
        seed=params["seed"],
        media=params.get("media", "image"),
        negative_prompt=params.get("negative_prompt"),
        duration_s=params.get("duration_s"),
        fps=params.get("fps"),
        aspect_ratio=params.get("aspect_ratio"),
        inputs=inputs,
        options=params.get("options") or {},
        inject=spec.inject,
        job_id=str(started.job_id),
        callback_url=callback_url(state, started.account),
    )


async def job_inputs(state: State, started: StartedJob) -> tuple[InputImage, ...]:
    """The images a job feeds in: its parent's output first (a chain), then its reference
    images and mask. Raises ProviderError naming the input that failed."""
    inputs: list[InputImage] = []
    if started.parent_id is not None:  # no query for the jobs that are not chained
        async with state.sessionmaker() as session:
            parent = await repository.parent_output(session, started.job_id)
        if parent is None:
            raise ProviderPermanentError(
                "parent_failed", "the job whose output this job takes has not succeeded"
            )
        index, key, content_type = parent
        try:
            data = await state.storage.get(key)
            url = state.storage.url(key)
        except StorageError as exc:
            raise ProviderRetryableError(
                "input_unavailable", f"job {index}'s output cannot be read now: {exc}"
            ) from exc
        inputs.append(InputImage("reference", data, content_type, url=url))
    params = started.params
    if params.get("reference_images") or params.get("mask"):
        inputs += await resolve_inputs(
            state, reference_images=params.get("reference_images") or [], mask=params.get("mask")
        )
    return tuple(inputs)
