"""Request and response bodies of /v1/schedules."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from service.batches.schemas import BatchCreate
from service.kit.text import Text, VisibleText
from service.schedules.cron import MAX_CRON, BadCron, check_cron, zone

CatchUpName = Literal["once", "skip"]
RunStatusName = Literal["submitted", "failed", "skipped"]


def _cron(value: str) -> str:
    try:
        check_cron(value)
    except BadCron as exc:
        raise PydanticCustomError("invalid_cron", "{reason}", {"reason": str(exc)}) from exc
    return " ".join(value.split())


def _timezone(value: str) -> str:
    try:
        zone(value)
    except BadCron as exc:
        raise PydanticCustomError("invalid_timezone", "{reason}", {"reason": str(exc)}) from exc
    return value


Cron = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=MAX_CRON,
        description="Five fields: minute hour day-of-month month day-of-week, e.g. "
        '"30 6 * * 1" (Mondays at 06:30)',
        examples=["30 6 * * 1"],
    ),
    AfterValidator(_cron),
]
Timezone = Annotated[
    Text,
    Field(
        min_length=1,
        max_length=64,
        description="An IANA timezone the cron expression is read in; DST follows it",
        examples=["Europe/Amsterdam"],
    ),
    AfterValidator(_timezone),
]
Name = Annotated[VisibleText, Field(min_length=1, max_length=200)]
CATCH_UP_DOC = (
    "Due times missed while nothing ran (workers down): `once` makes one batch for the "
    "most recent of them, `skip` makes none (a run more than DARKROOM_SCHEDULE_GRACE_S "
    "late is missed). Never one batch per missed due time."
)


class ScheduleCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: Name
    cron: Cron
    timezone: Timezone = "UTC"
    batch: BatchCreate = Field(
        description="The POST /v1/batches body submitted at every due time; checked now "
        "as a submit would check it, and again at every run"
    )
    enabled: bool = True
    catch_up: CatchUpName = Field(default="once", description=CATCH_UP_DOC)


class ScheduleUpdate(BaseModel):
    """Only the fields given change (null is the same as leaving a field out). A new
    cron, timezone or `enabled` recomputes the next due time from now."""

    model_config = ConfigDict(extra="forbid")

    name: Name | None = None
    cron: Cron | None = None
    timezone: Timezone | None = None
    batch: BatchCreate | None = None
    enabled: bool | None = None
    catch_up: CatchUpName | None = Field(default=None, description=CATCH_UP_DOC)


class ScheduleOut(BaseModel):
    id: uuid.UUID
    name: str
    cron: str
    timezone: str
    batch: dict[str, Any]
    enabled: bool
    catch_up: CatchUpName
    next_run_at: datetime | None = Field(description="The next due time (UTC); null while disabled")
    last_run_at: datetime | None = Field(description="The due time of the last run")
    created_at: datetime
    updated_at: datetime


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class ScheduleRunOut(BaseModel):
    id: uuid.UUID
    due_at: datetime = Field(description="The due time this run is for (UTC)")
    status: RunStatusName = Field(
        description="submitted: its batch was created; failed: the batch body no longer "
        "submits (error says why); skipped: missed while nothing ran, with catch_up skip"
    )
    batch_id: uuid.UUID | None
    batch_status: str | None = Field(description="The batch's status now, if it has one")
    error: str | None
    created_at: datetime


class ScheduleRunPage(BaseModel):
    items: list[ScheduleRunOut]
    next_cursor: str | None
