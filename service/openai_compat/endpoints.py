"""/openai/v1/images: OpenAI's images API on Darkroom. Thin handlers; the work is in
images.py."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Header, Query, UploadFile
from fastapi.responses import Response, StreamingResponse
from pydantic import Field

from service.batches.actions import enqueue_submitted
from service.batches.schemas import MAX_PROMPT
from service.deps import ApiKeyDep, SessionDep, StateDep
from service.kit.text import Text, VisibleText
from service.models import JobStatus
from service.openai_compat import images, repository
from service.openai_compat.errors import (
    OPENAI_ERROR_RESPONSES,
    OpenAIError,
    OpenAIErrorResponse,
    OpenAIRoute,
)
from service.openai_compat.outputs import signature_valid
from service.openai_compat.params import MAX_N, SIZE_PATTERN, ImageParams
from service.openai_compat.schemas import ImagesResponse
from service.openai_compat.uploads import edit_inputs
from service.storage.base import StorageError

router = APIRouter(
    prefix="/openai/v1",
    tags=["openai"],
    route_class=OpenAIRoute,
    responses=OPENAI_ERROR_RESPONSES,
)
EDITS_PATH = "/openai/v1/images/edits"

_WAIT_RESPONSES: dict[int | str, dict[str, object]] = {
    409: {"model": OpenAIErrorResponse, "description": "Idempotency-Key used with another body"},
    429: {"model": OpenAIErrorResponse, "description": "The budget ran out"},
    502: {"model": OpenAIErrorResponse, "description": "The generation failed"},
    504: {"model": OpenAIErrorResponse, "description": "Not ready in time: names the batch"},
}

IdempotencyKey = Annotated[
    Annotated[VisibleText, Field(min_length=1, max_length=255)] | None,
    Header(
        alias="Idempotency-Key",
        description="Send the same request again safely: the same images are waited for",
    ),
]


async def _run(
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    params: ImageParams,
    inputs: images.Inputs | None,
    idempotency_key: str | None,
) -> ImagesResponse:
    submitted = await images.submit_images(
        session,
        state,
        api_key=api_key,
        params=params,
        inputs=inputs,
        idempotency_key=idempotency_key or None,
    )
    await session.commit()  # lets go of the connection for the wait
    await enqueue_submitted(state, submitted)
    batch_id = submitted.batch.id
    jobs = await images.wait_for_jobs(state, batch_id, state.settings.openai_wait_timeout_s)
    return await images.present(state, batch_id, jobs, params.response_format or "b64_json")


@router.post("/images/generations", responses=_WAIT_RESPONSES)
async def create_image(
    params: ImageParams,
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    idempotency_key: IdempotencyKey = None,
) -> ImagesResponse:
    """OpenAI's `images.generate`: a realtime Darkroom batch of `n` jobs, waited for."""
    return await _run(state, session, api_key, params, None, idempotency_key)


@router.post("/images/edits", responses=_WAIT_RESPONSES)
async def edit_image(
    state: StateDep,
    session: SessionDep,
    api_key: ApiKeyDep,
    prompt: Annotated[VisibleText, Form(min_length=1, max_length=MAX_PROMPT)],
    image: Annotated[
        list[UploadFile],
        File(default_factory=list, description="One or more PNG, JPEG or WebP images"),
    ],
    image_list: Annotated[
        list[UploadFile],
        File(default_factory=list, alias="image[]", description="The same, as image[]"),
    ],
    mask: Annotated[UploadFile, File(description="Where to paint")] = None,  # type: ignore[assignment]
    model: Annotated[Text, Form(max_length=200)] = None,  # type: ignore[assignment]
    n: Annotated[int, Form(ge=1, le=MAX_N)] = None,  # type: ignore[assignment]  # noqa: RUF013
    size: Annotated[str, Form(pattern=SIZE_PATTERN)] = None,  # type: ignore[assignment]  # noqa: RUF013
    quality: Annotated[Text, Form(max_length=255)] = None,  # type: ignore[assignment]
    output_format: Annotated[Literal["png", "jpeg", "webp"], Form()] = None,  # type: ignore[assignment]  # noqa: RUF013
    response_format: Annotated[Literal["url", "b64_json"], Form()] = None,  # type: ignore[assignment]  # noqa: RUF013
    background: Annotated[Text, Form(max_length=255)] = None,  # type: ignore[assignment]
    input_fidelity: Annotated[Text, Form(max_length=255)] = None,  # type: ignore[assignment]
    output_compression: Annotated[int, Form(ge=0, le=100)] = None,  # type: ignore[assignment]  # noqa: RUF013
    user: Annotated[Text, Form(max_length=255)] = None,  # type: ignore[assignment]
    idempotency_key: IdempotencyKey = None,
) -> ImagesResponse:
    """OpenAI's `images.edit`: the images become uploads, the jobs' reference images (and
    mask), on a model that takes them. Form fields it does not know are ignored.

    A form has no null: the optional fields default to None without saying `null` in the
    schema (hence the type: ignore), or clients would send the string "null"."""
    files = [*image, *image_list]
    fields = {
        "prompt": prompt,
        "model": model,
        "n": n,
        "size": size,
        "quality": quality,
        "output_format": output_format,
        "response_format": response_format,
        "background": background,
        "input_fidelity": input_fidelity,
        "output_compression": output_compression,
        "user": user,
    }
    params = images.edit_params({k: v for k, v in fields.items() if v is not None})
    inputs = await edit_inputs(session, state, api_key, files, mask)
    return await _run(state, session, api_key, params, inputs, idempotency_key)


@router.get(
    "/outputs/{job_id}",
    response_class=StreamingResponse,
    responses={200: {"content": {"image/png": {}, "image/jpeg": {}, "image/webp": {}}}},
)
async def get_output(
    job_id: uuid.UUID,
    state: StateDep,
    session: SessionDep,
    expires: Annotated[int, Query(ge=0, le=2**40)],
    signature: Annotated[str, Query(max_length=128)],
) -> Response:
    """An output by the signed URL the door handed out (no API key: the signature is the
    permission, for a while)."""
    missing = OpenAIError(404, "No such output, or its URL has expired.", code="not_found")
    if not signature_valid(state.settings.secret_key, job_id, expires, signature):
        raise missing
    job = await repository.get_job(session, job_id)
    if job is None or job.status is not JobStatus.succeeded or job.output_key is None:
        raise missing
    await session.commit()
    try:
        if not await state.storage.exists(job.output_key):
            raise missing
    except StorageError as exc:
        raise OpenAIError(503, "the output storage is unavailable; try again shortly") from exc
    chunks = state.storage.open(job.output_key)
    return StreamingResponse(chunks, media_type=job.output_content_type)
