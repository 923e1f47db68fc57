"""A batch's `notify` URLs: checked at submit, never shown again, told the summary at
completion through the outbox (retried on the webhook schedule, every attempt logged),
the URL nowhere in logs, events, attempts or API answers; the SSRF guard on every
connection Apprise makes."""

from __future__ import annotations

import asyncio
import json
import logging

import httpx
import pytest
import structlog
from sqlalchemy import select
from structlog.testing import LogCapture

from service.kit.ssrf import STRICT, Policy
from service.models import DeliveryStatus, WebhookAttempt, WebhookEvent
from service.notifications.outbox import SINK
from service.notifications.sink import send
from service.notifications.urls import label, redacted, scrub
from service.state import State
from service.webhooks import delivery
from service.webhooks.tasks import _deliver_webhook
from service.worker import run_until_idle
from tests.conftest import Caller
from tests.webhooks.helpers import make_due
from tests.webhooks.receiver import Receiver, running_receiver

PASSWORD = "hunter2-notify-pw"
TOKEN = "T0KEN-notify-path-secret"
JOB = {"prompt": "a red bicycle", "width": 64, "height": 64}


def notify_url(receiver: Receiver) -> str:
    """json:// at the receiver, with a password and a secret path (its token)."""
    host = receiver.url.split("//", 1)[1].split("/", 1)[0]
    return f"json://notifier:{PASSWORD}@{host}/hooks/{TOKEN}"


async def notify_events(state: State) -> list[WebhookEvent]:
    async with state.sessionmaker() as session:
        query = select(WebhookEvent).where(WebhookEvent.sink == SINK)
        return list((await session.execute(query)).scalars())


async def attempts_of(state: State, event_id: str) -> list[WebhookAttempt]:
    async with state.sessionmaker() as session:
        query = select(WebhookAttempt).where(WebhookAttempt.event_id == event_id)
        return list((await session.execute(query.order_by(WebhookAttempt.number))).scalars())


async def test_summary_is_retried_until_delivered_and_the_url_never_shows(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    # structlog caches its loggers: the delivery's is swapped for a capturing one.
    capture = LogCapture()
    monkeypatch.setattr(delivery, "log", structlog.wrap_logger(None, processors=[capture]))
    async with running_receiver() as hooks, running_receiver() as receiver:
        receiver.fail_next = 2  # 503, 503, then 200
        url = notify_url(receiver)
        body = {
            "name": "skus",
            "callback_url": hooks.url,
            "notify": [url],
            "jobs": [JOB, {**JOB, "prompt": "a blue bicycle"}],
        }
        created = await client.post("/v1/batches", json=body, headers=caller.headers)
        assert created.status_code == 202, created.text
        batch_id = created.json()["id"]
        await run_until_idle(state)
        [event] = await notify_events(state)
        for _ in range(5):
            if len(receiver.received) >= 3:
                break
            await make_due(state)
            await _deliver_webhook(state, event.id)

        shown = [
            created.text,
            (await client.get(f"/v1/batches/{batch_id}", headers=caller.headers)).text,
            (await client.get("/v1/batches", headers=caller.headers)).text,
            *[r.body.decode() for r in hooks.received],
        ]

    # Three attempts, each logged; the third delivered the summary.
    assert len(receiver.received) == 3
    tries = await attempts_of(state, event.id)
    assert [a.error is None for a in tries] == [False, False, True]
    assert [a.status_code for a in tries[:2]] == [503, 503]
    delivered = next(e for e in await notify_events(state) if e.id == event.id)
    assert delivered.status is DeliveryStatus.delivered
    sent = json.loads(receiver.received[-1].body)
    assert sent["title"] == "Darkroom batch skus: succeeded"
    assert "2 jobs: 2 succeeded" in sent["message"]
    assert "Cost: $" in sent["message"]
    assert batch_id in sent["message"]
    assert receiver.received[-1].headers["authorization"].startswith("Basic ")

    # The API shows the scheme only; the URL is in no answer, webhook, event or log.
    assert json.loads(shown[1])["notify"] == ["json://…"]
    completed = [json.loads(t) for t in shown[3:]]
    assert any(p["type"] == "batch.completed" for p in completed)
    assert delivered.url == label(url)
    stored = [repr(delivered.payload), delivered.url, *(repr(a.error) for a in tries)]
    out, err = capfd.readouterr()
    logged = caplog.text + out + err + repr(capture.entries)
    assert "webhook_attempt_failed" in logged  # the capture does see the delivery's log
    for text in (*shown, *stored, logged):
        assert PASSWORD not in text
        assert TOKEN not in text


@pytest.mark.parametrize(
    ("urls", "field", "says"),
    [
        (["json://127.0.0.1/a", "slack://TA/BB/CC", "nope://example.com/x"], "notify[2]", "scheme"),
        (["syslog://"], "notify[0]", "not allowed"),
        (["json://169.254.169.254/latest/meta-data"], "notify[0]", "link-local"),
        (["no-scheme-here"], "notify[0]", "not a URL"),
        (["json://"], "notify[0]", "Apprise"),
    ],
)
async def test_a_bad_notify_url_is_a_422_naming_it(
    client: httpx.AsyncClient, caller: Caller, state: State, urls: list[str], field: str, says: str
) -> None:
    body = {"notify": urls, "jobs": [JOB]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422, response.text
    details = response.json()["error"]["details"]
    assert details[0]["field"] == field
    assert says in details[0]["message"]
    async with state.sessionmaker() as session:
        assert not (await session.execute(select(WebhookEvent))).first()


async def test_too_many_notify_urls_is_a_422(client: httpx.AsyncClient, caller: Caller) -> None:
    body = {"notify": [f"json://127.0.0.1/{n}" for n in range(11)], "jobs": [JOB]}
    response = await client.post("/v1/batches", json=body, headers=caller.headers)
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "notify"


async def test_every_connection_apprise_makes_is_guarded() -> None:
    """Strict policy (production): the loopback receiver is refused at the lookup, nothing
    reaches it, and the refusal names the host but no part of the path."""
    async with running_receiver() as receiver:
        url = notify_url(receiver)
        refused = await asyncio.to_thread(send, url, "t", "b", "info", STRICT, 5.0)
        allowed = await asyncio.to_thread(
            send, url, "t", "b", "info", Policy(allow_loopback=True), 5.0
        )
    assert not refused.delivered
    assert refused.refused
    assert "127.0.0.1" in refused.refused[0]
    assert TOKEN not in refused.refused[0]
    assert allowed.delivered
    assert len(receiver.received) == 1


async def test_no_proxy_from_the_environment_carries_a_notification_around_the_guard(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A proxy would do the lookup the guard checks: none applies to a notification."""
    async with running_receiver() as receiver:
        monkeypatch.setenv("HTTP_PROXY", "http://127.0.0.1:9/")  # nobody listens there
        monkeypatch.delenv("NO_PROXY", raising=False)
        monkeypatch.delenv("no_proxy", raising=False)
        sent = await asyncio.to_thread(
            send, notify_url(receiver), "t", "b", "info", Policy(allow_loopback=True), 5.0
        )
    assert sent.delivered
    assert len(receiver.received) == 1


def test_what_is_shown_of_a_url() -> None:
    url = f"slack://{TOKEN}/B0/C0?footer=no&token={PASSWORD}"
    assert redacted(url) == "slack://…"
    assert TOKEN not in label(url)
    assert label(url).startswith("notify:slack:")
    said = scrub(f"could not reach {url} (/{TOKEN}/B0, {PASSWORD})", url)
    assert TOKEN not in said
    assert PASSWORD not in said
