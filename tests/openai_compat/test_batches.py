"""OpenAI's Batch API for images through the official `openai` client: a JSONL file, one
Darkroom batch underneath, the status polled until completed, and the output file in
OpenAI's result shape (URLs that fetch without a key)."""

from __future__ import annotations

import asyncio
import io
import json
from typing import Any

import httpx
import openai
import pytest
from PIL import Image

from tests.openai_compat.conftest import Door


def request_line(custom_id: str, **body: Any) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/images/generations",
        "body": {"model": "local/procedural", "size": "64x64"} | body,
    }


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


async def until_done(door: Door, batch_id: str) -> Any:
    for _ in range(600):
        batch = await door.client.batches.retrieve(batch_id)
        if batch.status in ("completed", "failed", "cancelled", "expired"):
            return batch
        await asyncio.sleep(0.1)
    raise AssertionError(f"batch {batch_id} did not finish: {batch.status}")


async def test_a_batch_file_runs_as_one_darkroom_batch(door: Door) -> None:
    lines = [
        request_line("sku-1", prompt="a red mug"),
        request_line("sku-2", prompt="a blue mug", n=2, output_format="jpeg"),
        request_line("sku-3", prompt="a green mug", size="128x64"),
    ]
    uploaded = await door.client.files.create(
        file=("requests.jsonl", jsonl(lines)), purpose="batch"
    )
    assert uploaded.purpose == "batch"
    assert uploaded.bytes == len(jsonl(lines))
    assert (await door.client.files.retrieve(uploaded.id)).filename == "requests.jsonl"

    batch = await door.client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/images/generations",
        completion_window="24h",
        metadata={"campaign": "mugs"},
    )
    assert batch.status in ("in_progress", "completed")
    assert batch.request_counts is not None
    assert batch.request_counts.total == 3
    assert batch.metadata == {"campaign": "mugs"}

    done = await until_done(door, batch.id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (3, 0)
    assert done.error_file_id is None
    assert done.output_file_id is not None

    content = await door.client.files.content(done.output_file_id)
    results = [json.loads(line) for line in content.text.splitlines()]
    assert [r["custom_id"] for r in results] == ["sku-1", "sku-2", "sku-3"]
    sizes = []
    async with httpx.AsyncClient() as http:
        for result in results:
            assert result["error"] is None
            assert result["id"].startswith("batch_req_")
            response = result["response"]
            assert response["status_code"] == 200
            assert response["request_id"]
            for item in response["body"]["data"]:
                fetched = await http.get(item["url"])
                assert fetched.status_code == 200
                sizes.append(Image.open(io.BytesIO(fetched.content)).size)
    assert sizes == [(64, 64), (64, 64), (64, 64), (128, 64)]

    # Underneath: one Darkroom batch of four jobs, in bulk.
    async with httpx.AsyncClient(base_url=door.url, headers=door.caller.headers) as http:
        darkroom = (await http.get("/v1/batches")).json()["items"]
        assert [(b["counts"]["total"], b["priority"]) for b in darkroom] == [(4, "bulk")]

    listed = await door.client.batches.list()
    assert [b.id for b in listed.data] == [batch.id]
    # Cancelling a finished batch is refused, not a 500.
    with pytest.raises(openai.ConflictError):
        await door.client.batches.cancel(batch.id)


async def test_a_bad_line_is_a_400_naming_it_and_creates_nothing(door: Door) -> None:
    lines = [
        request_line("a", prompt="fine"),
        request_line("b", prompt="also fine"),
        request_line("c", prompt="bad size", size="32x32"),
    ]
    uploaded = await door.client.files.create(file=("bad.jsonl", jsonl(lines)), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        await door.client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/images/generations",
            completion_window="24h",
        )
    body = caught.value.body
    assert isinstance(body, dict)
    assert body["line"] == 3
    assert body["message"].startswith("line 3, body.size")
    assert (await door.client.batches.list()).data == []
