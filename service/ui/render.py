"""Templates, the headers every /ui answer carries, and the views the templates show.

Pages are rendered on the server with Jinja2 (autoescaped), so a prompt or an error
message from a provider is always text, never markup. The Content-Security-Policy lets
scripts and styles come only from /ui/static (no inline script at all); outputs may come
from the storage's own URL (S3, presigned), so images and videos may load from anywhere.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import Response

from service.models import ApiKey, Job, JobStatus

HERE = Path(__file__).resolve().parent
STATIC_DIR = HERE / "static"
templates = Jinja2Templates(directory=HERE / "templates")

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; style-src-attr 'unsafe-inline'; "
        "img-src * data: blob:; "
        "media-src * blob:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; "
        "base-uri 'none'; object-src 'none'"
    ),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}

# What a ?notice= code says. Only codes travel in the redirect, never text, so nothing a
# link carries is ever shown as written.
NOTICES = {
    "retried": "The failed jobs are back in line.",
    "cancelled": "The batch is being cancelled.",
    "nothing_to_retry": "This batch has no failed jobs to retry.",
    "batch_cancelled": "A cancelled batch cannot be retried.",
    "batch_finished": "The batch already finished; there is nothing to cancel.",
    "signed_out": "You are signed out.",
}


def page(
    request: Request,
    name: str,
    context: dict[str, Any],
    *,
    status_code: int = 200,
    user: ApiKey | None = None,
    csrf: str = "",
) -> Response:
    notice = NOTICES.get(request.query_params.get("notice") or "")
    response = templates.TemplateResponse(
        request,
        name,
        {"user": user, "csrf": csrf, "notice": notice, **context},
        status_code=status_code,
    )
    response.headers.update(SECURITY_HEADERS)
    return response


def error_page(request: Request, status_code: int, title: str, message: str) -> Response:
    return page(
        request, "error.html", {"title": title, "message": message}, status_code=status_code
    )


@dataclass(frozen=True)
class Tile:
    """One job in the gallery."""

    id: str
    index: int
    status: str
    prompt: str
    model: str
    cost_usd: float
    name: str | None
    media: str | None  # "image", "video", or None when there is no output (yet)
    width: int | None
    height: int | None
    error_code: str | None
    error_message: str | None
    attempts: int

    @property
    def output_url(self) -> str:
        return f"/ui/jobs/{self.id}/output"


def tile(job: Job) -> Tile:
    has_output = job.status is JobStatus.succeeded and job.output_key is not None
    media = None
    if has_output:
        media = "video" if (job.output_content_type or "").startswith("video/") else "image"
    failed = job.status is not JobStatus.succeeded and job.error_code is not None
    return Tile(
        id=str(job.id),
        index=job.index,
        status=job.status.value,
        prompt=job.prompt,
        model=job.model,
        cost_usd=float(job.cost_usd),
        name=job.output_key.rsplit("/", 1)[-1] if job.output_key else None,
        media=media,
        width=job.output_width,
        height=job.output_height,
        error_code=job.error_code if failed else None,
        error_message=(job.error_message or "") if failed else None,
        attempts=job.attempts,
    )


def parse_uuid(value: str) -> uuid.UUID | None:
    """An id from a page's path or query; None for a malformed one (the 404 page or
    nothing, never a 500)."""
    try:
        return uuid.UUID(value)
    except ValueError:
        return None
