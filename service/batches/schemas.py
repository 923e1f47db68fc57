"""Request and response bodies of /v1/batches."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AnyUrl,
    BaseModel,
    ConfigDict,
    Field,
    UrlConstraints,
)

from service.catalog.config import Task
from service.kit.text import JsonObject, Text, VisibleText
from service.templates.schemas import TemplateBody, TemplateRef

ImageFormatName = Literal["png", "jpeg", "webp"]
OutputFormatName = Literal["png", "jpeg", "webp", "mp4", "webm"]
MediaName = Literal["image", "video"]
ResolutionName = Literal["480p", "720p", "1080p"]
# A reference image: an upload id (POST /v1/uploads) or an https URL.
InputRef = Annotated[Text, Field(min_length=1, max_length=2000)]
MAX_REFERENCES = 8
Dimension = Annotated[int, Field(ge=64, le=4096, multiple_of=8)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]
CallbackUrl = Annotated[
    AnyUrl,
    UrlConstraints(allowed_schemes=["http", "https"], max_length=2000, host_required=True),
    Field(json_schema_extra={"pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^\\u0000]+$"}),
]
MAX_JOBS = 10_000
# A batch file (CSV, JSONL, YAML) may hold more rows than a JSON body may hold jobs.
MAX_FILE_ROWS = 100_000
MAX_TEMPLATES = 50
MAX_PROMPT = 4_000
MAX_METADATA_DEPTH = 16


def _bounded_depth(value: dict[str, Any]) -> dict[str, Any]:
    """Metadata is stored and sent back in every webhook: keep it shallow. (What it may
    contain, the body guard in kit.json_guard has already checked.)"""
    for child in value.values():
        if isinstance(child, dict | list):
            break
    else:
        return value  # flat, as a CSV row's variables are: nothing to walk
    stack: list[tuple[object, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_METADATA_DEPTH:
            raise ValueError(f"nested deeper than {MAX_METADATA_DEPTH} levels")
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            stack.extend((child, depth + 1) for child in item)
    return value


Metadata = Annotated[JsonObject, AfterValidator(_bounded_depth)]


class JobFields(BaseModel):
    """The per-job fields that `defaults` may also set."""

    model_config = ConfigDict(extra="forbid")

    model: Annotated[Text, Field(min_length=1, max_length=200)] | None = Field(
        default=None,
        description="A model this server is configured to run, or a route (a name that picks "
        "the model that fits the job); any other is refused, naming the job",
    )
    task: Task | None = Field(
        default=None,
        description="What the job does (text-to-image, image-to-image, inpaint, controlnet, "
        "ip-adapter, text-to-video, image-to-video); implied by the inputs when not given",
    )
    width: Dimension | None = None
    height: Dimension | None = None
    format: OutputFormatName | None = Field(
        default=None, description="png, jpeg or webp for images; mp4 (H.264) or webm for videos"
    )
    seed: Seed | None = None
    media: MediaName | None = Field(
        default=None, description="What to make; implied by the model when not given"
    )
    duration_s: Annotated[float, Field(gt=0, le=60, allow_inf_nan=False)] | None = Field(
        default=None, description="A video's length in seconds"
    )
    fps: Annotated[int, Field(ge=1, le=60)] | None = Field(
        default=None, description="A video's frames per second"
    )
    resolution: ResolutionName | None = Field(
        default=None,
        description="A video's size by name (16:9: 480p is 854x480, 720p 1280x720, 1080p "
        "1920x1080), instead of width and height",
    )
    negative_prompt: Annotated[Text, Field(max_length=MAX_PROMPT)] | None = None
    options: Metadata | None = Field(
        default=None,
        description="Model-specific parameters: only those the model declares, within their "
        "ranges, when it declares some; else passed to the provider as given",
    )
    metadata: Metadata | None = Field(
        default=None,
        description=f"Any JSON object, nested at most {MAX_METADATA_DEPTH} levels; kept as given "
        "and sent back in every webhook",
    )


class ParentInput(BaseModel):
    model_config = ConfigDict(extra="forbid")

    job: Annotated[int, Field(ge=0, lt=MAX_JOBS)] = Field(
        description="The index, in this batch, of the job whose output this job takes"
    )


TemplateKey = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")]


class JobCreate(JobFields):
    prompt: Annotated[VisibleText, Field(min_length=1, max_length=MAX_PROMPT)] | None = Field(
        default=None,
        description="Required unless the batch has a template: the template's rendering "
        "over `variables` is the prompt then",
    )
    output_name: Annotated[Text, Field(min_length=1, max_length=255)] | None = None
    reference_images: Annotated[list[InputRef], Field(max_length=MAX_REFERENCES)] | None = Field(
        default=None,
        description="Images the model works from: upload ids (POST /v1/uploads) or https URLs",
    )
    mask: InputRef | None = Field(
        default=None, description="Where to paint: an upload id or an https URL"
    )
    input: ParentInput | None = Field(
        default=None,
        description="Take another job's output as this job's input (a chain): the job "
        "waits until that one succeeds, and fails with parent_failed if it fails",
    )
    template: TemplateKey | None = Field(
        default=None, description="Which of the batch's named `templates` renders this job"
    )
    variables: Metadata | None = Field(
        default=None,
        description="What the batch's template sees; kept on the job (a missing one is a 422)",
    )


PriorityName = Literal["realtime", "bulk"]
# The column is NUMERIC(12, 6): six digits before the point, so a budget that rounds to a
# million would not fit.
Budget = Annotated[float, Field(gt=0, le=999_999, allow_inf_nan=False)]


class BatchCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Annotated[Text, Field(max_length=200)] | None = None
    priority: PriorityName = Field(
        default="bulk",
        description="realtime work is dispatched before bulk work at every provider",
    )
    budget_usd: Budget | None = Field(
        default=None,
        description="Stop dispatching before the estimated spend would pass this; the jobs "
        "left fail with code budget_exceeded",
    )
    callback_url: CallbackUrl | None = None
    metadata: Metadata | None = Field(
        default=None,
        description=f"Any JSON object, nested at most {MAX_METADATA_DEPTH} levels; kept as given "
        "and sent back in every webhook",
    )
    defaults: JobFields | None = None
    template: TemplateBody | TemplateRef | None = Field(
        default=None,
        description="Sandboxed Jinja2 templates for each job's prompt, negative_prompt and "
        "output_name over its `variables`; or a stored one, `name` or `name@version`. A job's "
        "own field wins over the template's",
    )
    templates: (
        Annotated[dict[TemplateKey, TemplateBody | TemplateRef], Field(max_length=MAX_TEMPLATES)]
        | None
    ) = Field(default=None, description="Named templates, which a job picks with its `template`")
    jobs: Annotated[list[JobCreate], Field(min_length=1, max_length=MAX_JOBS)]


class FileBatchCreate(BatchCreate):
    """A batch read from a CSV, JSONL or YAML file: the same body, with room for more rows."""

    jobs: Annotated[list[JobCreate], Field(min_length=1, max_length=MAX_FILE_ROWS)]


class BatchCounts(BaseModel):
    total: int
    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int


BatchStatusName = Literal[
    "queued", "running", "succeeded", "failed", "partially_failed", "cancelled"
]


class BatchOut(BaseModel):
    id: uuid.UUID
    name: str | None
    status: BatchStatusName
    priority: PriorityName
    counts: BatchCounts
    cost_usd: float
    cost_by_model: dict[str, float] = Field(
        description="cost_usd split by the model each attempt ran on (a job that fell back "
        "is charged to each model it tried, for what each cost)"
    )
    budget_usd: float | None
    created_at: datetime
    completed_at: datetime | None
    metadata: dict[str, Any]
    callback_url: str | None


class BatchCreated(BatchOut):
    """The 202 body: the batch, and what it is expected to cost (the sum of each job's
    estimate, by the price of the model each job was routed to)."""

    estimate_usd: float = Field(description="The batch's estimated cost at submit, in USD")
    estimate_by_model: dict[str, float] = Field(description="The estimate split by model")


class DryRunJob(BaseModel):
    index: int
    model: str = Field(description="The model the job would run on")
    route: str | None = Field(description="The route the job named, if it named one")
    routing: dict[str, Any] | None = Field(
        description="Which candidate the route chose and why, and the candidates it skipped"
    )
    mapped: dict[str, Any] | None = Field(
        description="What was changed from what the job asked, for this model"
    )
    fallbacks: list[str] = Field(description="The models the job would fall back to, in order")
    estimate_usd: float


class DryRunOut(BaseModel):
    """POST /v1/batches?dry_run=true: what a submit would do; nothing is created."""

    valid: bool
    job_count: int
    estimate_usd: float
    estimate_by_model: dict[str, float]
    jobs: list[DryRunJob]


class BatchPage(BaseModel):
    items: list[BatchOut]
    next_cursor: str | None
