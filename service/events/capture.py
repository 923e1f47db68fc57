"""Every job and batch state change a transaction makes, noted as it is flushed, so that
whoever commits can publish them after the commit (service.events.publish).

One hook on every Session sees every ORM path that moves a job (claims, outcomes,
fallbacks, requeues, cancellations): no transition can forget to say so. Bulk UPDATEs
(a batch's cancel or retry) are not seen here; their endpoints publish what they changed.
Nothing leaves the process here: a rolled-back transaction's notes are simply dropped.
"""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event, inspect
from sqlalchemy.orm import Session, UOWTransaction

from service.events.schemas import BatchEvent
from service.logging import get_logger
from service.models import Batch, Job, JobStatus

log = get_logger(__name__)

_KEY = "darkroom.events"
_BATCHES_KEY = "darkroom.events.batches"


def job_data(job: Job) -> dict[str, Any]:
    """A job event's fields, read from the row now (before commit). `output_key` becomes
    `output_url` when published (the URL depends on the storage, not on the row)."""
    succeeded = job.status is JobStatus.succeeded
    return {
        "id": str(job.id),
        "batch_id": str(job.batch_id),
        "index": job.index,
        "status": job.status.value,
        "model": job.model,
        "error_code": None if succeeded else job.error_code,
        "error_message": None if succeeded else job.error_message,
        "cost_usd": float(job.cost_usd or 0),
        "output_key": job.output_key if succeeded else None,
    }


def _status_changed(obj: object) -> bool:
    return bool(inspect(obj).attrs.status.history.has_changes())


@event.listens_for(Session, "after_flush")
def _note_changes(session: Session, _context: UOWTransaction) -> None:
    """Runs inside the flush: only looks at what is in memory, never queries. The job
    itself is kept, and read after commit: what a listener gets is what committed, even
    when a field was set after the flush that saw the status change."""
    for obj in session.dirty:
        if isinstance(obj, Job) and _status_changed(obj):
            jobs: dict[uuid.UUID, Job] = session.info.setdefault(_KEY, {})
            jobs.setdefault(obj.id, obj)
        elif isinstance(obj, Batch) and _status_changed(obj):
            batches: set[uuid.UUID] = session.info.setdefault(_BATCHES_KEY, set())
            batches.add(obj.id)


def take_noted(session: Any) -> tuple[list[BatchEvent], set[uuid.UUID]]:
    """After commit: an event for each job whose status changed in this session (sync or
    async), in the order of their first change, and the batches whose status changed.
    The notes are cleared."""
    info = session.info
    jobs: dict[uuid.UUID, Job] = info.pop(_KEY, {})
    events: list[BatchEvent] = []
    for job in jobs.values():
        try:
            events.append(BatchEvent(job.batch_id, "job", job_data(job)))
        except Exception as exc:  # an attribute expired: no reload outside the session
            log.warning("job_event_skipped", error=repr(exc))
    return events, info.pop(_BATCHES_KEY, set())
