"""A failed delivery leaves one log line per attempt, naming the host but never the URL's
query (it may hold the receiver's token)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import structlog
from sqlalchemy import select
from structlog.testing import LogCapture

from service.models import WebhookEvent
from service.state import State
from service.webhooks import delivery
from service.webhooks.tasks import _deliver_webhook, url_host
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.webhooks.helpers import use_up_schedule
from tests.webhooks.receiver import closed_port_url, running_receiver

SECRET = "tok_s3cr3t"


@pytest.fixture
def delivery_log(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    capture = LogCapture()
    monkeypatch.setattr(delivery, "log", structlog.wrap_logger(None, processors=[capture]))
    return capture.entries


def failures(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in entries if e["event"] in ("webhook_attempt_failed", "webhook_given_up")]


async def test_each_failed_attempt_is_logged_once_with_host_status_and_next_attempt(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    delivery_log: list[dict[str, Any]],
) -> None:
    async with running_receiver() as receiver:
        receiver.fail_next = 1
        url = f"{receiver.url}?token={SECRET}"
        await submit(client, caller, {"callback_url": url, "jobs": [{"prompt": "a", "width": 64}]})
        await run_until_idle(state)
    async with state.sessionmaker() as session:
        events = {e.id: e for e in (await session.execute(select(WebhookEvent))).scalars()}

    [failed] = failures(delivery_log)
    assert failed["log_level"] == "warning"
    assert failed["event"] == "webhook_attempt_failed"
    event = events[failed["event_id"]]
    assert failed["event_type"] == event.type
    assert failed["host"] == url_host(receiver.url)
    assert failed["host"].startswith("127.0.0.1:")
    assert failed["status_code"] == 503
    assert failed["error"] == "receiver answered HTTP 503"
    assert failed["attempt"] == 1
    assert failed["next_attempt_at"] == event.next_attempt_at.isoformat()
    assert SECRET not in repr(delivery_log)


async def test_an_unreachable_receiver_logs_the_error_and_the_last_attempt_says_it_gave_up(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    delivery_log: list[dict[str, Any]],
) -> None:
    await submit(
        client,
        caller,
        {"callback_url": f"{closed_port_url()}?token={SECRET}", "jobs": [{"prompt": "a"}]},
    )
    await run_until_idle(state)
    first_round = failures(delivery_log)
    assert {e["event_type"] for e in first_round} == {"job.succeeded", "batch.completed"}
    assert all(e["status_code"] is None for e in first_round)
    assert all("ConnectError" in e["error"] for e in first_round)
    assert all(e["next_attempt_at"] is not None for e in first_round)

    event_id = first_round[0]["event_id"]
    await use_up_schedule(state, event_id)
    await _deliver_webhook(state, event_id)

    last = failures(delivery_log)[len(first_round) :]
    assert [(e["event"], e["event_id"], e["next_attempt_at"]) for e in last] == [
        ("webhook_given_up", event_id, None)
    ]
    assert SECRET not in repr(delivery_log)


@pytest.mark.parametrize(
    ("url", "host"),
    [
        ("https://user:pw@hooks.example.com/x?token=1", "hooks.example.com"),
        ("http://hooks.example.com:8080/x", "hooks.example.com:8080"),
        ("http://[::1]:9/x", "::1:9"),
        ("not a url", "(no host)"),
    ],
)
def test_url_host_keeps_neither_credentials_nor_path(url: str, host: str) -> None:
    assert url_host(url) == host
