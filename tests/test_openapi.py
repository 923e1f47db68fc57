"""openapi/openapi.json is what the app serves, and the app keeps every promise it makes.

The fuzz test runs the real app under uvicorn on a free port (its lifespan builds its own
State on the real Postgres and Redis, in the server thread's loop) and lets schemathesis
call it over HTTP from openapi/openapi.json, with and without a valid API key. Its
strings come from all of Unicode, NUL included; what schemathesis cannot send (lone
surrogates, deep nesting) comes from tests/fuzz_inputs.py. Valid data must be accepted,
so the document has to state every limit the server holds to.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import httpx
import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis.strategies import SearchStrategy
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    positive_data_acceptance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import text

from service.app import create_app
from service.config import Settings
from service.state import State, build_state, close_state
from service.worker import running_worker
from tests.conftest import ROOT, Caller
from tests.fuzz_inputs import UPLOAD_IMAGE, runnable_models, unsound_bodies, within_reach
from tests.jobs.scripted import run_attempt
from tests.live import live_server

SCHEMA_PATH = ROOT / "openapi" / "openapi.json"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    positive_data_acceptance,
]
# Per operation and mode; DARKROOM_FUZZ_EXAMPLES=500 for a deeper run by hand.
MAX_EXAMPLES = int(os.environ.get("DARKROOM_FUZZ_EXAMPLES", "40"))
UNAUTHENTICATED_EXAMPLES = max(MAX_EXAMPLES // 4, 5)
UNAUTHENTICATED = {
    "no key": {},
    "unknown key": {"authorization": "Bearer dk_not_a_key"},
    "not a bearer key": {"authorization": "Basic Zm9vOmJhcg=="},
}


def test_openapi_json_is_what_the_app_serves(settings: Settings) -> None:
    served = json.dumps(create_app(settings).openapi(), indent=2, sort_keys=True) + "\n"
    assert SCHEMA_PATH.read_text() == served, (
        "openapi/openapi.json is out of date: run `darkroom openapi` and commit the result"
    )


async def test_errors_outside_the_document_use_the_envelope(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    """Wrong methods and unknown paths cannot be documented per operation; they still
    answer in the one error shape."""
    for response, status, code in [
        (await client.delete("/v1/batches", headers=caller.headers), 405, "method_not_allowed"),
        (await client.get("/v1/nothing-here", headers=caller.headers), 404, "not_found"),
    ]:
        assert response.status_code == status
        error = response.json()["error"]
        assert set(error) == {"code", "message", "details"}
        assert (error["code"], error["details"]) == (code, [])
        assert error["message"]


async def run_jobs(settings: Settings, job_ids: list[str]) -> None:
    """Run jobs to the end on a State of this loop's own (the fixture's belongs to another).
    Their webhooks (to a port nobody listens on) end failed, so they can be redelivered."""
    state = await build_state(settings, pool_size=2)
    try:
        for job_id in job_ids:
            await run_attempt(state, uuid.UUID(job_id))
        async with state.engine.begin() as connection:
            await connection.execute(text("UPDATE webhook_events SET status = 'failed'"))
    finally:
        await close_state(state)


def seed(base_url: str, caller: Caller, settings: Settings) -> dict[str, list[str]]:
    """Real ids for the path parameters: a queued batch, and a finished one with outputs."""
    http = requests.Session()
    http.headers.update(caller.headers)
    body = {
        "name": "fuzz",
        "callback_url": "http://127.0.0.1:9/fuzz",
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
    job_ids = {}
    for batch_id in batches:
        page = http.get(f"{base_url}/v1/batches/{batch_id}/jobs", timeout=10).json()
        job_ids[batch_id] = [job["id"] for job in page["items"]]
    asyncio.run(run_jobs(settings, job_ids[finished]))
    for job_id in job_ids[finished]:
        job = http.get(f"{base_url}/v1/jobs/{job_id}", timeout=10).json()
        assert job["status"] == "succeeded", job
    events = http.get(f"{base_url}/v1/webhooks/events", timeout=10).json()["items"]
    assert events, "the finished batch's webhooks"
    integration = {
        "name": "fuzz",
        "kind": "generic",
        "template": {"prompt": "A cover for {{ title | default('an article') }}"},
    }
    response = http.post(f"{base_url}/v1/integrations", json=integration, timeout=10)
    assert response.status_code == 201, response.text
    template = {"name": "fuzz", "prompt": "A cover for {{ title }}"}
    stored = http.post(f"{base_url}/v1/templates", json=template, timeout=10)
    assert stored.status_code == 201, stored.text
    upload = http.post(
        f"{base_url}/v1/uploads", files={"file": ("a.png", UPLOAD_IMAGE)}, timeout=10
    )
    assert upload.status_code == 201, upload.text
    schedule = {"name": "fuzz", "cron": "30 6 * * 1", "batch": {"jobs": body["jobs"]}}
    scheduled = http.post(f"{base_url}/v1/schedules", json=schedule, timeout=10)
    assert scheduled.status_code == 201, scheduled.text
    openai_ids = _seed_openai(http, base_url)
    return openai_ids | {
        "batch_id": batches,
        "job_id": job_ids[queued] + job_ids[finished],
        "event_id": [event["id"] for event in events],
        "endpoint_id": sorted({event["endpoint_id"] for event in events}),
        "integration_id": [response.json()["id"]],
        # Accounts that take callbacks (their signature is what is fuzzed), one that does
        # not, and the kind name the Replicate callback URL used to be.
        "account": ["replicate", "local", "openai"],
        "upload_id": [upload.json()["id"]],
        "schedule_id": [scheduled.json()["id"]],
        # Model names (GET /v1/models/{name}); one holds a slash. A template's name.
        "name": ["local/procedural", "fuzz"],
        "version": ["1"],
    }


def _seed_openai(http: requests.Session, base_url: str) -> dict[str, list[str]]:
    """An OpenAI Batch API input file and a batch made from it (left in progress)."""
    line = {
        "custom_id": "fuzz-1",
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"prompt": "a red kite", "size": "64x64"},
    }
    uploaded = http.post(
        f"{base_url}/openai/v1/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", json.dumps(line).encode() + b"\n")},
        timeout=10,
    )
    assert uploaded.status_code == 200, uploaded.text
    body = {
        "input_file_id": uploaded.json()["id"],
        "endpoint": "/v1/images/generations",
        "completion_window": "24h",
    }
    batch = http.post(f"{base_url}/openai/v1/batches", json=body, timeout=10)
    assert batch.status_code == 200, batch.text
    return {"file_id": [uploaded.json()["id"]], "openai_batch_id": [batch.json()["id"]]}


@contextmanager
def worker_thread(settings: Settings) -> Iterator[None]:
    """A worker (dispatcher and arq loops) in a thread of its own, for the OpenAI door's
    image operations, which wait for their images."""
    stop = threading.Event()

    async def work() -> None:
        state = await build_state(settings, pool_size=4)
        try:
            async with running_worker(state):
                while not stop.is_set():
                    await asyncio.sleep(0.05)
        finally:
            await close_state(state)

    thread = threading.Thread(target=lambda: asyncio.run(work()), daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(timeout=30)


@dataclass
class Fuzzer:
    """Runs schemathesis against one live server; collects failures and what answered."""

    base_url: str
    models: list[str]
    failures: list[str] = field(default_factory=list)
    answered: Counter[tuple[str, int]] = field(default_factory=Counter)

    def fuzz(
        self,
        operation: APIOperation,
        *,
        who: str,
        headers: dict[str, str],
        mode: GenerationMode = GenerationMode.POSITIVE,
        max_examples: int = MAX_EXAMPLES,
        path_parameters: dict[str, str] | None = None,
    ) -> None:
        http = requests.Session()
        strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
        if mode is GenerationMode.POSITIVE:
            strategy = strategy.map(within_reach(self.models))

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
            response = case.call(base_url=self.base_url, session=http, headers=headers, timeout=30)
            self.answered[operation.label, response.status_code] += 1
            case.validate_response(response, checks=CHECKS, headers=headers)

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:  # FailureGroup is a BaseExceptionGroup
            self.failures.append(f"{operation.label} ({mode.value}, {who}):\n{exc}")
        finally:
            http.close()

    def fuzz_unsound(self, cases: SearchStrategy[schemathesis.Case], path: str, key: str) -> None:
        """Bodies with a lone surrogate, a NUL or deep nesting somewhere: a 422 naming
        the field, from every endpoint that takes a body, before anything else."""
        http = requests.Session()
        headers = {"authorization": f"Bearer {key}", "content-type": "application/json"}

        @hypothesis.settings(
            max_examples=MAX_EXAMPLES,
            deadline=None,
            database=None,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @hypothesis.given(raw=unsound_bodies(cases))
        def run(raw: bytes) -> None:
            response = http.post(self.base_url + path, data=raw, headers=headers, timeout=30)
            self.answered[f"POST {path} (unsound)", response.status_code] += 1
            assert response.status_code == 422, response.text
            error = response.json()["error"]
            assert error["code"] in {"validation_error", "invalid_json"}, error
            assert error["details"], error
            assert error["details"][0]["field"], error
            assert error["message"].startswith(error["details"][0]["field"] + ": "), error

        try:
            run()
        except (Exception, BaseExceptionGroup) as exc:
            self.failures.append(f"POST {path} (unsound bodies):\n{exc}")
        finally:
            http.close()


def modes_for(operation: APIOperation) -> list[GenerationMode]:
    """Negative cases need something to break: an operation without inputs has none."""
    containers = (operation.path_parameters, operation.query, operation.body)
    has_inputs = any(len(container) for container in containers) or any(
        p.name.lower() != "authorization" for p in operation.headers
    )
    return (
        [GenerationMode.POSITIVE, GenerationMode.NEGATIVE]
        if has_inputs
        else [GenerationMode.POSITIVE]
    )


def test_fuzz_the_api_from_openapi_json(state: State, caller: Caller) -> None:
    schema = schemathesis.openapi.from_path(SCHEMA_PATH)
    # Strings from all of Unicode, NUL included (the defaults, stated because they matter).
    schema.config.generation.update(codec="utf-8", allow_x00=True)
    operations = [result.ok() for result in schema.get_all_operations()]
    # The OpenAI door's image operations wait for a worker: fuzzed last, with one running.
    waiting = [op for op in operations if op.path.startswith("/openai/v1/images/")]
    # A batch's live events stream until it finishes: a queued one's ends quickly here.
    served = state.settings.model_copy(update={"events_max_stream_s": 0.5})
    with live_server(served) as base_url:
        known = seed(base_url, caller, state.settings)
        fuzzer = Fuzzer(base_url, runnable_models(state.registry))
        for operation in operations:
            if operation in waiting:
                continue
            for mode in modes_for(operation):
                fuzzer.fuzz(operation, who="valid key", headers=caller.headers, mode=mode)
            for who, headers in UNAUTHENTICATED.items():
                fuzzer.fuzz(
                    operation, who=who, headers=headers, max_examples=UNAUTHENTICATED_EXAMPLES
                )
        # Then on real ids, so reads find something; cancel and delete go last.
        last = sorted(
            operations, key=lambda op: (op.method.upper() == "DELETE", op.path.endswith("/cancel"))
        )
        for operation in last:
            for parameter in operation.path_parameters:
                for value in known[parameter.name]:
                    fuzzer.fuzz(
                        operation,
                        who="valid key, real id",
                        headers=caller.headers,
                        max_examples=MAX_EXAMPLES // 4,
                        path_parameters={parameter.name: value},
                    )
        with worker_thread(state.settings):
            for operation in waiting:
                for mode in modes_for(operation):
                    fuzzer.fuzz(
                        operation,
                        who="valid key",
                        headers=caller.headers,
                        mode=mode,
                        max_examples=MAX_EXAMPLES // 4,
                    )
                for who, headers in UNAUTHENTICATED.items():
                    fuzzer.fuzz(operation, who=who, headers=headers, max_examples=5)
        submit = schema["/v1/batches"]["POST"]
        batches = submit.as_strategy(generation_mode=GenerationMode.POSITIVE)
        hook = f"/v1/hooks/{known['integration_id'][0]}"
        for path in ("/v1/batches", "/v1/callbacks/replicate", hook):
            fuzzer.fuzz_unsound(batches, path, caller.key)
    assert not fuzzer.failures, "\n\n".join(fuzzer.failures)
    # The fuzzer got past validation and authentication everywhere, or it proved little.
    # Three operations cannot succeed from random input, and have tests of their own: a
    # callback needs a provider's signature, a CMS hook its CMS's, a retry needs a batch
    # with failed jobs.
    out_of_reach = {
        "POST /v1/callbacks/{account}",
        "POST /v1/hooks/{integration_id}",
        "POST /v1/batches/{batch_id}/retry",
        # The OpenAI door: an output URL needs the signature the door handed out, a batch
        # the id of an uploaded file (tests/openai_compat).
        "GET /openai/v1/outputs/{job_id}",
        "POST /openai/v1/batches",
    }
    succeeded = {label for label, status in fuzzer.answered if status < 300}
    assert succeeded == {op.label for op in operations} - out_of_reach, fuzzer.answered
    unauthorized = {label for label, status in fuzzer.answered if status == 401}
    keyed = {
        op.label
        for op in operations
        if op.path.startswith(("/v1/", "/openai/v1/")) and "/outputs/" not in op.path
    }
    assert unauthorized == keyed
