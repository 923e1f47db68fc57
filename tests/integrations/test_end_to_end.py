"""Every CMS kind end to end, against its simulator over real HTTP: the CMS publishes, the
signed webhook makes a job, the image is made, written back through the outbox, and
found on the article in the simulator's state; the callback_url hears of each step. Then
the write-back's failures: permanent ones end at once with the CMS's words, a retryable
one is retried on the schedule and both attempts are kept."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text
from standardwebhooks import Webhook

from service.models import Batch, InboundEvent, Job
from service.state import State
from service.webhooks.tasks import _deliver_webhook
from service.worker import run_until_idle
from simulators.cms.base import run_cms
from simulators.cms.ghost import DEFAULT_ADMIN_KEY_SECRET
from tests.conftest import Caller
from tests.integrations.cms_case import Case, Delivery, sim_call
from tests.integrations.cms_cases import CASES
from tests.webhooks.helpers import make_due
from tests.webhooks.receiver import Receiver, running_receiver


@dataclass
class Run:
    """One kind's simulator, an integration pointing at it and its seeded article."""

    case: Case
    sim: str
    integration: dict[str, Any]
    article: dict[str, Any]
    receiver: Receiver
    client: httpx.AsyncClient
    caller: Caller

    async def deliver(self, delivery: Delivery) -> httpx.Response:
        url = f"/v1/hooks/{self.integration['id']}"
        return await self.client.post(url, content=delivery.body, headers=delivery.headers)

    async def get(self, path: str) -> Any:
        response = await self.client.get(path, headers=self.caller.headers)
        assert response.status_code == 200, response.text
        return response.json()

    async def inbound_event(self) -> dict[str, Any]:
        (event,) = (await self.get(f"/v1/integrations/{self.integration['id']}/events"))["items"]
        return dict(event)

    async def writeback_event(self) -> dict[str, Any]:
        events = (await self.get("/v1/webhooks/events"))["items"]
        (found,) = [e for e in events if e["sink"] == "writeback"]
        return dict(await self.get(f"/v1/webhooks/events/{found['id']}"))

    def callbacks(self) -> dict[str, list[dict[str, Any]]]:
        """What the callback_url received, verified with the key's webhook secret."""
        verifier = Webhook(self.caller.webhook_secret)
        by_type: dict[str, list[dict[str, Any]]] = {}
        for request in self.receiver.received:
            payload = verifier.verify(request.body, request.headers)
            by_type.setdefault(payload["type"], []).append(payload)
        return by_type

    async def sim_state(self) -> Any:
        return await sim_call(self.sim, "GET", "/_sim/state")


@asynccontextmanager
async def running(
    kind: str, client: httpx.AsyncClient, caller: Caller, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Run]:
    case = CASES[kind]
    monkeypatch.setenv(case.env_name, case.credential)
    async with run_cms(partial(case.build, None)) as sim, running_receiver() as receiver:
        article = await case.seed(sim)
        body = case.integration_body(sim, receiver.url)
        created = await client.post("/v1/integrations", json=body, headers=caller.headers)
        assert created.status_code == 201, created.text
        yield Run(case, sim, created.json(), article, receiver, client, caller)


async def rows(state: State) -> tuple[int, int, int]:
    """(inbound events, batches, jobs) stored."""
    async with state.sessionmaker() as session:
        found = [
            await session.scalar(select(func.count()).select_from(model))
            for model in (InboundEvent, Batch, Job)
        ]
    return (int(found[0] or 0), int(found[1] or 0), int(found[2] or 0))


async def publish(run: Run) -> dict[str, Any]:
    """The CMS's signed publish webhook, accepted with a job."""
    response = await run.deliver(run.case.webhook(run.article, run.integration))
    assert response.status_code == 202, response.text
    answer: dict[str, Any] = response.json()
    assert answer["status"] == "accepted"
    assert answer["job_id"] is not None
    return answer


@pytest.mark.parametrize("kind", list(CASES))
async def test_a_publish_ends_with_the_image_on_the_article(
    kind: str,
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(kind, client, caller, monkeypatch) as run:
        delivery = run.case.webhook(run.article, run.integration)
        response = await run.deliver(delivery)
        assert response.status_code == 202, response.text
        answer = response.json()
        assert answer["status"] == "accepted"
        await run_until_idle(state)

        job = await run.get(f"/v1/jobs/{answer['job_id']}")
        assert job["status"] == "succeeded", job
        assert job["params"]["output_name"] == "moths-of-the-city-cover.png"
        written = await run.sim_state()
        image = run.case.image_on(written, run.article)
        assert image, written
        if kind == "generic":
            assert image == job["output"]["url"]

        event = await run.inbound_event()
        assert (event["id"], event["verdict"], event["job_id"]) == (
            answer["event_id"],
            "accepted",
            answer["job_id"],
        )
        assert (event["writeback_status"], event["writeback_error"]) == ("succeeded", None)
        assert event["writeback_result"]
        outbox = await run.writeback_event()
        assert (outbox["status"], outbox["attempts"]) == ("delivered", 1)
        assert outbox["job_id"] == answer["job_id"]
        assert outbox["integration_id"] == run.integration["id"]

        heard = run.callbacks()
        assert sorted(heard) == ["batch.completed", "job.succeeded", "writeback.succeeded"]
        assert all(len(payloads) == 1 for payloads in heard.values())
        (told,) = heard["writeback.succeeded"]
        assert told["data"]["event_id"] == answer["event_id"]
        assert told["data"]["job_id"] == answer["job_id"]
        assert told["data"]["integration_id"] == run.integration["id"]
        assert told["data"]["result"] == event["writeback_result"]

        # The CMS delivers the same webhook again: nothing new, in Darkroom or in the CMS.
        requests = await sim_call(run.sim, "GET", "/_sim/requests")
        again = await run.deliver(delivery)
        assert again.status_code == 202, again.text
        assert again.json() == {**answer, "status": "duplicate"}
        await run_until_idle(state)
        assert await rows(state) == (1, 1, 1)
        assert await sim_call(run.sim, "GET", "/_sim/requests") == requests
        assert await run.sim_state() == written
        assert len(run.receiver.received) == 3


def missing_admin_key(monkeypatch: pytest.MonkeyPatch, run: Run) -> None:
    """An Admin API key Ghost does not know (it was deleted in Ghost)."""
    monkeypatch.setenv(run.case.env_name, f"{'0' * 24}:{DEFAULT_ADMIN_KEY_SECRET}")


async def article_deleted(run: Run) -> None:
    """The article is deleted in the CMS (a reset keeps only the configured content)."""
    await sim_call(run.sim, "POST", "/_sim/reset")


PERMANENT = [
    pytest.param("ghost", "Unknown Admin API Key", 401, id="ghost-401"),
    pytest.param("strapi", "Entry not found", 404, id="strapi-404"),
    pytest.param("generic", "product sku-7 not found", 404, id="generic-404"),
]


@pytest.mark.parametrize(("kind", "message", "status"), PERMANENT)
async def test_a_permanent_write_back_failure_ends_at_once_with_the_cms_words(
    kind: str,
    message: str,
    status: int,
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(kind, client, caller, monkeypatch) as run:
        answer = await publish(run)
        if status == 401:
            missing_admin_key(monkeypatch, run)
        else:
            await article_deleted(run)
        await run_until_idle(state, wait_for_deferred=True)

        assert (await run.get(f"/v1/jobs/{answer['job_id']}"))["status"] == "succeeded"
        if status == 401:
            assert run.case.image_on(await run.sim_state(), run.article) is None
        event = await run.inbound_event()
        assert event["writeback_status"] == "failed"
        assert message in event["writeback_error"]
        outbox = await run.writeback_event()
        assert (outbox["status"], outbox["attempts"]) == ("failed", 1)  # no retry
        (attempt,) = outbox["attempt_log"]
        assert attempt["status_code"] == status
        assert message in attempt["error"]

        heard = run.callbacks()
        assert sorted(heard) == ["batch.completed", "job.succeeded", "writeback.failed"]
        (told,) = heard["writeback.failed"]
        assert told["data"]["event_id"] == answer["event_id"]
        assert message in told["data"]["error"]


RETRYABLE = [
    pytest.param("wordpress", "POST", "/wp-json/wp/v2/media$", id="wordpress-upload"),
    pytest.param("sanity", "POST", "/data/mutate/", id="sanity-mutate"),
    pytest.param("contentful", "PUT", "/entries/", id="contentful-link"),
    pytest.param("generic", "PATCH", "/products/", id="generic-patch"),
]


@pytest.mark.parametrize(("kind", "method", "path"), RETRYABLE)
async def test_a_503_is_retried_on_the_schedule_and_then_succeeds(
    kind: str,
    method: str,
    path: str,
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with running(kind, client, caller, monkeypatch) as run:
        fault = {"method": method, "path": path, "status": 503, "count": 1}
        fault["body"] = {"message": "down for maintenance"}
        await sim_call(run.sim, "POST", "/_sim/faults", fault)
        await publish(run)
        await run_until_idle(state)
        first = await run.writeback_event()
        assert first["attempt_log"][0]["status_code"] == 503
        if first["status"] == "pending":  # the retry is due later: bring it to now
            assert first["next_attempt_at"] is not None
            await make_due(state)
            await _deliver_webhook(state, first["id"])
            await run_until_idle(state)  # the writeback.succeeded callback

        outbox = await run.writeback_event()
        assert (outbox["status"], outbox["attempts"]) == ("delivered", 2)
        codes = [a["status_code"] for a in outbox["attempt_log"]]
        assert codes == [503, 200]
        assert "503" in (outbox["attempt_log"][0]["error"] or "")
        assert run.case.image_on(await run.sim_state(), run.article)
        event = await run.inbound_event()
        assert (event["writeback_status"], event["writeback_error"]) == ("succeeded", None)
        heard = run.callbacks()
        assert sorted(heard) == ["batch.completed", "job.succeeded", "writeback.succeeded"]
        assert len(heard["writeback.succeeded"]) == 1
        assert json.dumps(heard).count("writeback.failed") == 0


async def test_a_write_back_block_no_longer_valid_fails_at_once(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block that no longer validates (saved under older rules): the sink says why, at
    once, with no retry and no crash."""
    async with running("generic", client, caller, monkeypatch) as run:
        answer = await publish(run)
        async with state.sessionmaker() as session, session.begin():
            await session.execute(
                text("UPDATE integrations SET writeback = :block WHERE id = :id"),
                {"block": json.dumps({"method": "TRACE"}), "id": run.integration["id"]},
            )
        await run_until_idle(state)
        job = await run.get(f"/v1/jobs/{answer['job_id']}")
        assert job["status"] == "succeeded"
        outbox = await run.writeback_event()
        assert (outbox["status"], outbox["attempts"]) == ("failed", 1)
        assert "writeback block is not valid" in outbox["last_error"]
        assert (await run.inbound_event())["writeback_status"] == "failed"
        assert [p["data"]["error"] for p in run.callbacks()["writeback.failed"]] == [
            outbox["last_error"]
        ]
