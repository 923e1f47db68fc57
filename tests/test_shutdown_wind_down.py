"""`wind_down`, in process: what runs finishes within the grace, uncut; a second signal
(`hurry`) ends the grace at once and cuts what still runs. (The whole worker under a real
SIGTERM: tests/test_shutdown.py.)"""

from __future__ import annotations

import asyncio
import uuid

import pytest
import structlog
from structlog.testing import LogCapture

from service.dispatch import dispatcher as dispatcher_module
from service.state import State
from service.worker import build_dispatcher, wind_down


def in_flight(seconds: float) -> tuple[asyncio.Task[str], asyncio.Event]:
    """A dispatcher with one provider request in flight, taking `seconds`."""
    started = asyncio.Event()

    async def request() -> str:
        started.set()
        await asyncio.sleep(seconds)
        return "answered"

    return asyncio.create_task(request()), started


async def test_a_request_within_the_grace_finishes_uncut(state: State) -> None:
    dispatcher = build_dispatcher(state)
    task, started = in_flight(0.2)
    dispatcher.running.add(task)
    await started.wait()
    await wind_down(dispatcher, [], grace_s=3600)
    assert task.result() == "answered"


async def test_a_second_signal_cuts_the_grace_short(state: State) -> None:
    dispatcher = build_dispatcher(state)
    task, started = in_flight(3600)
    dispatcher.running.add(task)
    await started.wait()
    hurry = asyncio.Event()
    winding = asyncio.create_task(wind_down(dispatcher, [], grace_s=3600, hurry=hurry))
    await asyncio.sleep(0.1)
    assert not winding.done()  # within its grace, waiting for the request
    hurry.set()
    await asyncio.wait_for(winding, timeout=60)
    assert task.cancelled()


async def test_each_cut_request_is_logged_with_its_job(
    state: State, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The module's logger is swapped: structlog caches loggers on first use, so
    # capture_logs would miss the lines of one an earlier test already used.
    capture = LogCapture()
    monkeypatch.setattr(dispatcher_module, "log", structlog.wrap_logger(None, processors=[capture]))
    dispatcher = build_dispatcher(state)
    started = asyncio.Event()

    async def request() -> None:
        started.set()
        await asyncio.sleep(3600)

    job_id = str(uuid.uuid4())
    task = asyncio.create_task(request(), name=f"job:{job_id}")  # as the dispatcher names it
    dispatcher.running.add(task)
    await started.wait()
    await wind_down(dispatcher, [], grace_s=0)
    assert task.cancelled()
    cut = [entry for entry in capture.entries if entry["event"] == "job_request_cut"]
    assert [(entry["log_level"], entry["job_id"]) for entry in cut] == [("warning", job_id)]
