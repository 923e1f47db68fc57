"""A batch's notifications, written to the outbox in the transaction that completes the
batch (`batches/service.complete_batch`); `sink.py` delivers them.

One event per URL, so a retry repeats only the message that failed. The event's URL is a
label (`urls.label`) and its payload the summary and the URL's index in `batches.notify`:
the URL itself is read from the batch at delivery and appears nowhere else."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from service.models import Batch
from service.notifications.urls import label
from service.webhooks.service import record_outbox_event

SINK = "notify"
EVENT_TYPE = "batch.notification"


async def record_notifications(
    session: AsyncSession, batch: Batch, summary: dict[str, Any]
) -> list[str]:
    """The batch's notification events (same transaction); their ids go to delivery
    after commit."""
    title, body, kind = message(summary)
    event_ids = []
    for index, url in enumerate(batch.notify or []):
        event_ids.append(
            await record_outbox_event(
                session,
                api_key_id=batch.api_key_id,
                url=label(url),
                type=EVENT_TYPE,
                data={},
                sink=SINK,
                batch_id=batch.id,
                payload={
                    "batch_id": str(batch.id),
                    "index": index,
                    "title": title,
                    "body": body,
                    "notify_type": kind,
                    "summary": summary,
                },
            )
        )
    return event_ids


def message(summary: dict[str, Any]) -> tuple[str, str, str]:
    """Title, body and Apprise notify type of a completed batch's summary (BatchOut)."""
    name = summary.get("name") or summary.get("id")
    status = str(summary.get("status"))
    counts = summary.get("counts") or {}
    title = f"Darkroom batch {name}: {status.replace('_', ' ')}"
    parts = [
        f"{counts.get(state, 0)} {state}"
        for state in ("succeeded", "failed", "cancelled")
        if counts.get(state, 0) or state == "succeeded"
    ]
    lines = [f"{counts.get('total', 0)} jobs: " + ", ".join(parts)]
    cost = float(summary.get("cost_usd") or 0.0)
    by_model = summary.get("cost_by_model") or {}
    split = ", ".join(f"{model} ${usd:.4f}" for model, usd in by_model.items())
    lines.append(f"Cost: ${cost:.4f}" + (f" ({split})" if split else ""))
    took = _wall_time(summary.get("created_at"), summary.get("completed_at"))
    if took is not None:
        lines.append(f"Wall time: {took}")
    lines.append(f"Batch: {summary.get('id')}")
    kind = {"succeeded": "success", "failed": "failure"}.get(status, "warning")
    return title, "\n".join(lines), kind


def _wall_time(created: Any, completed: Any) -> str | None:
    try:
        seconds = int(
            (datetime.fromisoformat(completed) - datetime.fromisoformat(created)).total_seconds()
        )
    except (TypeError, ValueError):
        return None
    hours, rest = divmod(max(seconds, 0), 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes}m {secs}s" if hours else f"{minutes}m {secs}s"
