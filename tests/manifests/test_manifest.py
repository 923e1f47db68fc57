"""GET /v1/batches/{id}/manifest: one row per job, totals, JSON and CSV, streamed a page
of jobs at a time."""

from __future__ import annotations

import csv
import hashlib
import io
from typing import Any

import httpx
import pytest

from service.manifests import service as manifests
from service.manifests.rows import COLUMNS, FileNames
from service.state import State
from service.worker import run_until_idle
from tests.conftest import Caller, make_caller, submit
from tests.manifests.helpers import finished_batch


async def manifest(client: httpx.AsyncClient, caller: Caller, batch_id: str) -> dict[str, Any]:
    response = await client.get(f"/v1/batches/{batch_id}/manifest", headers=caller.headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    return body


async def test_json_manifest_has_a_row_per_job_and_the_totals(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await finished_batch(client, caller, state)
    body = await manifest(client, caller, batch_id)

    assert (body["batch_id"], body["name"], body["status"]) == (
        batch_id,
        "mugs",
        "partially_failed",
    )
    totals = body["totals"]
    assert totals["jobs"] == 4
    assert totals["by_status"] == {
        "queued": 0,
        "running": 0,
        "succeeded": 3,
        "failed": 1,
        "cancelled": 0,
    }
    assert totals["cost_usd"] == pytest.approx(sum(row["cost_usd"] for row in body["jobs"]))
    assert sum(totals["cost_by_model"].values()) == pytest.approx(totals["cost_usd"])
    assert totals["wall_time_s"] > 0
    assert body["variables"] == ["name", "sku", "status"]

    red, blue, refused, unnamed = body["jobs"]
    assert [row["index"] for row in body["jobs"]] == [0, 1, 2, 3]
    assert red["variables"] == {"sku": "SKU-1", "name": "Red mug", "status": "new"}
    assert unnamed["variables"] == {}
    assert (red["file"], red["output_name"], unnamed["file"]) == (
        "SKU-1.png",
        "SKU-1.png",
        "00003.jpg",
    )
    assert (red["status"], red["model"], red["route"], red["seed"]) == (
        "succeeded",
        "local/procedural",
        None,
        7,
    )
    assert (red["width"], red["height"], red["media"]) == (64, 96, "image")
    assert red["error"] is None
    assert red["error_code"] is None
    assert red["generation_s"] is not None
    assert red["generation_s"] >= 0
    assert red["attempts"] == 1
    # The row's URL and sha256 are those of the stored output.
    output = await client.get(red["url"].removeprefix("http://testserver"), headers=caller.headers)
    assert hashlib.sha256(output.content).hexdigest() == red["sha256"]
    assert len(output.content) == red["bytes"]

    assert refused["status"] == "failed"
    assert (refused["error_code"], refused["error"]) == ("content_policy", "refused: no")
    assert (refused["file"], refused["url"], refused["sha256"]) == (None, None, None)
    assert refused["output_name"] == "SKU-3.png"  # the name it would have had
    assert (refused["width"], refused["height"]) == (64, 64)  # what was asked
    assert blue["file"] == "SKU-2.png"


async def test_csv_manifest_by_accept_or_format(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await finished_batch(client, caller, state)
    path = f"/v1/batches/{batch_id}/manifest"
    by_accept = await client.get(path, headers={**caller.headers, "accept": "text/csv"})
    by_query = await client.get(f"{path}?format=csv", headers=caller.headers)
    assert by_accept.status_code == by_query.status_code == 200
    assert by_accept.headers["content-type"] == "text/csv; charset=utf-8"
    assert by_accept.text == by_query.text
    # ?format wins over Accept
    as_json = await client.get(
        f"{path}?format=json", headers={**caller.headers, "accept": "text/csv"}
    )
    assert as_json.json()["batch_id"] == batch_id

    reader = csv.reader(io.StringIO(by_accept.text))
    header = next(reader)
    # Variables first (sorted; one named like a fixed column is prefixed), then the fixed
    # columns in their stable order.
    assert header == ["name", "sku", "var.status", *COLUMNS]
    rows = [dict(zip(header, record, strict=True)) for record in reader]
    assert [row["sku"] for row in rows] == ["SKU-1", "SKU-2", "SKU-3", ""]
    assert rows[1]["name"] == "Blue mug, large"  # quoted by the csv module
    assert rows[2]["name"] == 'The "refused" one'
    assert rows[0]["var.status"] == "new"
    assert rows[0]["status"] == "succeeded"
    assert rows[2]["error_code"] == "content_policy"
    assert rows[2]["file"] == ""
    body = await manifest(client, caller, batch_id)
    for row, expected in zip(rows, body["jobs"], strict=True):
        assert row["sha256"] == (expected["sha256"] or "")
        assert float(row["cost_usd"]) == pytest.approx(expected["cost_usd"])


async def test_rows_come_a_page_at_a_time_in_index_order(
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(manifests, "PAGE", 2)
    jobs = [
        {"prompt": f"tile {i}", "width": 64, "height": 64, "variables": {"n": i}} for i in range(5)
    ]
    batch_id = await submit(client, caller, {"jobs": jobs})
    body = await manifest(client, caller, batch_id)
    assert [row["index"] for row in body["jobs"]] == [0, 1, 2, 3, 4]
    assert [row["status"] for row in body["jobs"]] == ["queued"] * 5
    assert [row["variables"] for row in body["jobs"]] == [{"n": i} for i in range(5)]
    assert body["totals"]["by_status"]["queued"] == 5
    assert all(row["file"] is None for row in body["jobs"])

    await run_until_idle(state)
    body = await manifest(client, caller, batch_id)
    assert [row["file"] for row in body["jobs"]] == [f"{i:05d}.png" for i in range(5)]
    csv_text = (
        await client.get(f"/v1/batches/{batch_id}/manifest?format=csv", headers=caller.headers)
    ).text
    assert [r["n"] for r in csv.DictReader(io.StringIO(csv_text))] == ["0", "1", "2", "3", "4"]


async def test_another_keys_batch_is_not_found(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    batch_id = await submit(client, caller, {"jobs": [{"prompt": "mine"}]})
    other = await make_caller(state, "other")
    for path in ("manifest", "manifest?format=csv", "archive"):
        response = await client.get(f"/v1/batches/{batch_id}/{path}", headers=other.headers)
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    bad = await client.get(f"/v1/batches/{batch_id}/manifest?format=xml", headers=caller.headers)
    assert bad.status_code == 422
    assert bad.json()["error"]["details"][0]["field"] == "format"


def test_clashing_names_are_made_unique_in_index_order() -> None:
    names = FileNames()
    claimed = [
        names.claim(n)
        for n in ["a.png", "A.png", "a-2.png", "manifest.json", "a.png", "noext", "NOEXT"]
    ]
    assert claimed == [
        "a.png",
        "A-2.png",
        "a-2-2.png",
        "manifest-2.json",
        "a-3.png",
        "noext",
        "NOEXT-2",
    ]
