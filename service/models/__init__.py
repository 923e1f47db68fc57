"""Every model, imported here so Alembic's autogenerate sees every table."""

from service.kit.base import Base
from service.models.api_key import ApiKey
from service.models.batch import FINAL_BATCH_STATUSES, Batch, BatchStatus, Priority
from service.models.budget import BudgetLedger, KeyBudget
from service.models.inbound_event import InboundEvent, Verdict
from service.models.integration import Integration
from service.models.job import (
    ACTIVE_JOB_STATUSES,
    FINAL_JOB_STATUSES,
    Job,
    JobStatus,
)
from service.models.job_attempt import JobAttempt
from service.models.openai_batch import OpenAIBatch
from service.models.openai_file import OpenAIFile
from service.models.prompt_template import PromptTemplate
from service.models.schedule import CatchUp, RunStatus, Schedule, ScheduleClock, ScheduleRun
from service.models.upload import Upload
from service.models.webhook_endpoint import WebhookEndpoint
from service.models.webhook_event import DeliveryStatus, WebhookAttempt, WebhookEvent

__all__ = [
    "ACTIVE_JOB_STATUSES",
    "FINAL_BATCH_STATUSES",
    "FINAL_JOB_STATUSES",
    "ApiKey",
    "Base",
    "Batch",
    "BatchStatus",
    "BudgetLedger",
    "CatchUp",
    "DeliveryStatus",
    "InboundEvent",
    "Integration",
    "Job",
    "JobAttempt",
    "JobStatus",
    "KeyBudget",
    "OpenAIBatch",
    "OpenAIFile",
    "Priority",
    "PromptTemplate",
    "RunStatus",
    "Schedule",
    "ScheduleClock",
    "ScheduleRun",
    "Upload",
    "Verdict",
    "WebhookAttempt",
    "WebhookEndpoint",
    "WebhookEvent",
]
