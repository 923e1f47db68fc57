"""openapi/openapi.json is what the app serves, and the app keeps every promise it makes.

The fuzz test runs the real app under uvicorn on a free port (its lifespan builds its own
State on the real Postgres and Redis, in the server thread's loop) and lets schemathesis
call it over HTTP from openapi/openapi.json, with and without a valid API key.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import hypothesis
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.app import create_app
from service.config import Settings
from service.jobs.tasks import _run_job
from service.state import State, build_state, close_state
from tests.conftest import ROOT, Caller

SCHEMA_PATH = ROOT / "openapi" / "openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 40
UNAUTHENTICATED_EXAMPLES = 10


def test_openapi_json_is_what_the_app_serves(settings: Settings) -> None:
    served = json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_PATH.read_text() == served, (
        "openapi/openapi.json is out of date: run `darkroom openapi` and commit the result"
    )


@contextmanager
def live_server(settings: Settings) -> Iterator[str]:
    """The app under uvicorn in a thread, on a port the OS picked."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the live server did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


async def run_jobs(settings: Settings, job_ids: list[str]) -> None:
    """Run jobs to the end on a State of this loop's own (the fixture's belongs to another)."""
    state = await build_state(settings, pool_size=2)
    try:
        for job_id in job_ids:
            await _run_job(state, uuid.UUID(job_id))
    finally:
        await close_state(state)


def seed(base_url: str, caller: Caller, settings: Settings) -> dict[str, list[str]]:
    """Real ids for the path parameters: a queued batch, and a finished one with outputs."""
    http = requests.Session()
    http.headers.update(caller.headers)
    body = {
        "name": "fuzz",
        "metadata": {"big": 2**70, "nested": {"a": [1, 2.5, None, True]}},
        "jobs": [
            {"prompt": "a red bicycle", "width": 64, "height": 64, "seed": 1},
            {"prompt": "a blue kite", "width": 64, "height": 64, "format": "jpeg"},
            {"prompt": "a green door", "width": 64, "height": 64, "format": "webp"},
        ],
    }
    batches = []
    for _ in range(2):
        response = http.post(f"{base_url}/v1/batches", json=body, timeout=10)
        assert response.status_code == 202, response.text
        batches.append(response.json()["id"])
    queued, finished = batches
    job_ids = {
        batch_id: [
            job["id"]
            for job in http.get(f"{base_url}/v1/batches/{batch_id}/jobs", timeout=10).json()[
                "items"
            ]
        ]
        for batch_id in batches
    }
    asyncio.run(run_jobs(settings, job_ids[finished]))
    for job_id in job_ids[finished]:
        job = http.get(f"{base_url}/v1/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "succeeded", job
    return {"batch_id": batches, "job_id": job_ids[queued] + job_ids[finished]}


def fuzz_operation(
    operation: Any,
    *,
    base_url: str,
    headers: dict[str, str],
    mode: schemathesis.GenerationMode,
    max_examples: int,
    path_parameters: dict[str, str] | None = None,
) -> str | None:
    """Fuzz one operation; the failure report, or None when every check passed."""
    http = requests.Session()
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

    @hypothesis.settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @hypothesis.given(case=strategy)
    def run(case: schemathesis.Case) -> None:
        response = case.call(base_url=base_url, session=http, headers=headers, timeout=30)
        case.validate_response(response, checks=CHECKS, headers=headers)

    try:
        run()
    except Exception as exc:
        return f"{operation.label} ({mode.value}, {'key' if headers else 'no key'}):\n{exc}"
    finally:
        http.close()
    return None


def test_fuzz_the_api_from_openapi_json(state: State, caller: Caller) -> None:
    schema = schemathesis.openapi.from_path(SCHEMA_PATH)
    operations = [result.ok() for result in schema.get_all_operations()]
    failures: list[str] = []
    with live_server(state.settings) as base_url:
        known = seed(base_url, caller, state.settings)
        for operation in operations:
            for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
                failures.append(
                    fuzz_operation(
                        operation,
                        base_url=base_url,
                        headers=caller.headers,
                        mode=mode,
                        max_examples=MAX_EXAMPLES,
                    )
                )
            for headers in ({}, {"authorization": "Bearer dk_not_a_key"}):
                failures.append(
                    fuzz_operation(
                        operation,
                        base_url=base_url,
                        headers=headers,
                        mode=schemathesis.GenerationMode.POSITIVE,
                        max_examples=UNAUTHENTICATED_EXAMPLES,
                    )
                )
        # Last, on real ids (cancel runs after every read of them).
        for operation in sorted(operations, key=lambda op: op.path.endswith("/cancel")):
            names = {p.name for p in operation.path_parameters}
            if not names:
                continue
            for value in known[next(iter(names))]:
                failures.append(
                    fuzz_operation(
                        operation,
                        base_url=base_url,
                        headers=caller.headers,
                        mode=schemathesis.GenerationMode.POSITIVE,
                        max_examples=MAX_EXAMPLES // 4,
                        path_parameters={next(iter(names)): value},
                    )
                )
    found = [failure for failure in failures if failure is not None]
    assert not found, "\n\n".join(found)
