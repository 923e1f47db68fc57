"""The Batch API's edges, in process and with no worker running (so nothing finishes
unless the test says so): cancellation, ids, purposes, endpoints."""

from __future__ import annotations

import json
from typing import Any

import httpx

from tests.conftest import Caller
from tests.openai_compat.test_batches import jsonl, request_line


async def upload(client: httpx.AsyncClient, caller: Caller, data: bytes) -> str:
    response = await client.post(
        "/openai/v1/files",
        data={"purpose": "batch"},
        files={"file": ("in.jsonl", data, "application/jsonl")},
        headers=caller.headers,
    )
    assert response.status_code == 200, response.text
    return str(response.json()["id"])


async def create(client: httpx.AsyncClient, caller: Caller, **body: Any) -> httpx.Response:
    payload = {"endpoint": "/v1/images/generations", "completion_window": "24h"} | body
    return await client.post("/openai/v1/batches", json=payload, headers=caller.headers)


async def test_cancel_ends_cancelled_with_every_line_in_the_error_file(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    file_id = await upload(
        client, caller, jsonl([request_line(f"r{n}", prompt="x") for n in range(3)])
    )
    created = await create(client, caller, input_file_id=file_id)
    assert created.status_code == 200, created.text
    batch = created.json()
    assert batch["status"] == "in_progress"
    assert batch["request_counts"] == {"total": 3, "completed": 0, "failed": 0}

    cancelled = await client.post(
        f"/openai/v1/batches/{batch['id']}/cancel", headers=caller.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"  # nothing was running: cancelled at once
    assert body["request_counts"] == {"total": 3, "completed": 0, "failed": 3}
    assert body["output_file_id"] is None
    content = await client.get(
        f"/openai/v1/files/{body['error_file_id']}/content", headers=caller.headers
    )
    lines = [json.loads(line) for line in content.text.splitlines()]
    assert [line["custom_id"] for line in lines] == ["r0", "r1", "r2"]
    assert {line["error"]["code"] for line in lines} == {"batch_cancelled"}
    # The Darkroom batch underneath is cancelled too.
    darkroom = await client.get(f"/v1/batches/{body['darkroom_batch_id']}", headers=caller.headers)
    assert darkroom.json()["status"] == "cancelled"


async def test_requests_the_batch_api_refuses(client: httpx.AsyncClient, caller: Caller) -> None:
    file_id = await upload(client, caller, jsonl([request_line("a", prompt="x")]))
    refusals = [
        ({"input_file_id": file_id, "endpoint": "/v1/chat/completions"}, "endpoint"),
        ({"input_file_id": file_id, "completion_window": "1h"}, "completion_window"),
        ({"input_file_id": file_id, "surprise": 1}, "surprise"),
    ]
    for body, param in refusals:
        response = await create(client, caller, **body)
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == param
    for missing in ("file-" + "0" * 32, "file-nope", "nope"):
        response = await create(client, caller, input_file_id=missing)
        assert response.status_code == 404, response.text
        got = await client.get(f"/openai/v1/files/{missing}", headers=caller.headers)
        assert got.status_code == 404
    for path in ("/openai/v1/batches/batch_nope", "/openai/v1/batches/" + "batch_" + "0" * 32):
        assert (await client.get(path, headers=caller.headers)).status_code == 404
    wrong_purpose = await client.post(
        "/openai/v1/files",
        data={"purpose": "fine-tune"},
        files={"file": ("in.jsonl", b"{}\n")},
        headers=caller.headers,
    )
    assert wrong_purpose.status_code == 400
    assert wrong_purpose.json()["error"]["param"] == "purpose"
    empty = await upload(client, caller, b"\n")
    response = await create(client, caller, input_file_id=empty)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "empty_file"


async def test_bad_lines_are_named(client: httpx.AsyncClient, caller: Caller) -> None:
    good = json.dumps(request_line("ok", prompt="x")).encode()
    cases = [
        (b"not json", 2, None),
        (b"[1, 2]", 2, None),
        (json.dumps(request_line("ok", prompt="dup")).encode(), 2, "custom_id"),
        (json.dumps(request_line("b", prompt="x") | {"method": "GET"}).encode(), 2, "method"),
        (json.dumps(request_line("b", prompt="x", model="nope")).encode(), 2, "body.model"),
        (json.dumps(request_line("b", prompt="x", n=0)).encode(), 2, "body.n"),
        (json.dumps(request_line("b", prompt="a\u0000b")).encode(), 2, "body.prompt"),
        (json.dumps(request_line("b", prompt="   ")).encode(), 2, "body.prompt"),
        (b'{"custom_id": "b", "x": NaN}', 2, None),
    ]
    for line, number, field in cases:
        file_id = await upload(client, caller, good + b"\n" + line + b"\n")
        response = await create(client, caller, input_file_id=file_id)
        assert response.status_code == 400, (line, response.text)
        error = response.json()["error"]
        assert error["line"] == number, (line, error)
        if field is not None:
            assert error["field"] == field, (line, error)
    listed = await client.get("/openai/v1/batches", headers=caller.headers)
    assert listed.json()["data"] == []
    assert (await client.get("/v1/batches", headers=caller.headers)).json()["items"] == []
