"""Everything a worker does for a job is logged with the job's and batch's ids: here a
webhook delivery, which runs in an arq task knowing only its event id."""

from __future__ import annotations

import httpx
import pytest

from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, submit
from tests.metrics.scraping import scrape, value
from tests.webhooks.receiver import closed_port_url


async def test_a_failed_delivery_is_logged_with_its_batch_and_counted(
    client: httpx.AsyncClient, caller: Caller, state: State, capfd: pytest.CaptureFixture[str]
) -> None:
    before = await scrape(client)
    body = {
        "callback_url": closed_port_url(),
        "jobs": [{"prompt": "a", "width": 64, "height": 64}],
    }
    batch_id = await submit(client, caller, body)
    await run_until_idle(state)

    lines = capfd.readouterr().err.splitlines()
    failed = [line for line in lines if "webhook_attempt_failed" in line]
    assert failed, lines
    assert all(f"batch_id={batch_id}" in line for line in failed)
    after = await scrape(client)
    labels = {"sink": "webhook", "outcome": "failed"}
    name = "darkroom_delivery_duration_seconds_count"
    assert value(after, name, **labels) - value(before, name, **labels) == len(failed)
