"""CSV batches: a header row, one job per row; job-field columns typed, the others
template variables; errors by line and column; nothing created when a row is bad."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from service.app import create_app
from service.kit.pagination import encode_cursor
from service.state import State
from tests.batches.files.posting import (
    CSV,
    assert_details_start,
    counts,
    post_form,
    post_raw,
    rejected,
    stored_batch,
    stored_jobs,
)
from tests.conftest import Caller

TEMPLATE = {
    "prompt": "E-commerce photo: {{ name }}, {{ color }}, studio lighting, white background",
    "output_name": "{{ sku }}",
}


async def test_a_templated_csv_makes_one_named_job_per_row(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    csv = 'sku,name,color,width,seed\nA-1,mug,red,512,7\nA-2,"cup, large",blue,,\n'
    batch = {"name": "catalogue", "template": TEMPLATE, "defaults": {"height": 256}}
    response = await post_form(
        client, caller, ("skus.csv", csv, None), {"batch": json.dumps(batch)}
    )
    assert response.status_code == 202, response.text
    assert response.json()["counts"]["total"] == 2
    assert response.json()["name"] == "catalogue"
    first, second = await stored_jobs(state, response.json()["id"])
    assert first.prompt == "E-commerce photo: mug, red, studio lighting, white background"
    assert second.prompt.startswith("E-commerce photo: cup, large, blue")
    assert (first.params["output_name"], second.params["output_name"]) == ("A-1.png", "A-2.png")
    assert (first.params["width"], first.params["height"], first.params["seed"]) == (512, 256, 7)
    assert second.params["width"] == state.settings.default_width  # an empty cell: unset
    assert first.variables == {"sku": "A-1", "name": "mug", "color": "red"}
    stored = await stored_batch(state, response.json()["id"])
    assert stored.templates == {"template": {**TEMPLATE, "negative_prompt": None, "ref": None}}


async def test_the_csv_module_reads_quotes_newlines_and_a_bom(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    csv = (
        "\ufeffprompt,format,metadata\r\n"
        '"a red bicycle, at dawn",jpeg,"{""team"": ""blog""}"\r\n'
        '"two lines:\nsecond ""quoted""",,\r\n'
        "\r\n"
        "a kite \u2028 with a line separator,webp,\r\n"
    )
    response = await post_raw(client, caller, csv, f"{CSV}; charset=utf-8")
    assert response.status_code == 202, response.text
    jobs = await stored_jobs(state, response.json()["id"])
    assert [job.prompt for job in jobs] == [
        "a red bicycle, at dawn",
        'two lines:\nsecond "quoted"',
        "a kite \u2028 with a line separator",
    ]
    assert [job.params["format"] for job in jobs] == ["jpeg", "png", "webp"]
    assert jobs[0].metadata_ == {"team": "blog"}
    assert jobs[0].variables is None


async def test_a_file_may_hold_more_rows_than_a_json_body_and_pages_past_them(
    client: httpx.AsyncClient, caller: Caller
) -> None:
    rows = 10_050
    csv = "prompt,seed\n" + "".join(f"image {n},{n}\n" for n in range(rows))
    response = await post_raw(client, caller, csv, CSV)
    assert response.status_code == 202, response.text
    assert response.json()["counts"]["total"] == rows
    url = f"/v1/batches/{response.json()['id']}/jobs"
    # A cursor past index 10,000 (the JSON cap) is one a file batch's pages reach.
    cursor = encode_cursor([10_020])
    page = (await client.get(url, params={"cursor": cursor}, headers=caller.headers)).json()
    assert [job["prompt"] for job in page["items"]] == [f"image {n}" for n in range(10_021, rows)]
    assert page["next_cursor"] is None


BAD_FILES = {
    "not a multiple of 8": (
        "prompt,width\na,512\nb,513\n",
        {'line 3, column "width"': "Input should be a multiple of 8"},
    ),
    "not a number": (
        "prompt,seed\na,x1\n",
        {'line 2, column "seed"': "'x1' is not a whole number"},
    ),
    "more cells than the header": (
        "prompt,width\na,512,9\n",
        {"line 2": "3 cells, but the header names 2 columns (a cell with a comma must be quoted)"},
    ),
    "an empty file": ("", {"line 1": "the file is empty: a CSV batch needs a header row and rows"}),
    "only a BOM and blank lines": (
        "\ufeff\n\n",
        {"line 1": "the file is empty: a CSV batch needs a header row and rows"},
    ),
    "a header and no rows": (
        "prompt,width\n",
        {"line 2": "the file has a header but no rows: one row per job"},
    ),
    "a column named twice": (
        "prompt,sku,sku\na,1,2\n",
        {'line 1, column "sku"': "named twice in the header (columns 2 and 3)"},
    ),
    "a blank column name": (
        "prompt, ,sku\na,1,2\n",
        {"line 1, column 2": "the header names no column here"},
    ),
    "a bad row after an embedded newline": (
        'prompt,format\n"two\nlines",png\nthird,bmp\n',
        {'line 4, column "format"': "Input should be 'png', 'jpeg', 'webp', 'mp4' or 'webm'"},
    ),
    "no prompt and no template": (
        "sku\nA-1\n",
        {"line 2": "Field required: a prompt, or a template for the batch to render one"},
    ),
    "an unknown model": (
        "prompt,model\na,nope\n",
        {'line 2, column "model"': "unknown model 'nope'"},
    ),
    "a NUL in a cell": (
        "prompt,sku\na,b\x00c\n",
        {'line 2, column "sku"': "must not contain NUL (\\u0000)"},
    ),
    "a JSON column that is not an object": (
        "prompt,metadata\na,[1]\n",
        {'line 2, column "metadata"': "not a JSON object"},
    ),
}


@pytest.mark.parametrize(("csv", "expected"), BAD_FILES.values(), ids=BAD_FILES.keys())
async def test_a_bad_csv_is_refused_by_line_and_column_and_creates_nothing(
    client: httpx.AsyncClient, caller: Caller, state: State, csv: str, expected: dict[str, str]
) -> None:
    assert_details_start(rejected(await post_raw(client, caller, csv, CSV)), expected)
    assert await counts(state) == (0, 0)


async def test_every_bad_row_is_named_up_to_a_hundred(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    csv = "prompt,width\n" + "".join(f"p{n},{'513' if n % 2 else '512'}\n" for n in range(400))
    response = await post_raw(client, caller, csv, CSV)
    details = rejected(response)
    assert len(response.json()["error"]["details"]) == 100
    assert list(details)[:2] == ['line 3, column "width"', 'line 5, column "width"']
    assert await counts(state) == (0, 0)


async def test_a_missing_variable_names_the_row(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    csv = "sku,name,color\nA-1,mug,red\nA-2,cup,\n"
    response = await post_form(
        client, caller, ("a.csv", csv, CSV), {"template": json.dumps(TEMPLATE)}
    )
    details = rejected(response)
    assert details == {"line 3": "prompt template: UndefinedError: 'color' is undefined"}
    assert await counts(state) == (0, 0)


async def test_bytes_that_are_not_utf8_are_refused_naming_their_line(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = "prompt\na caf\u00e9\n".encode() + b"latin-1 caf\xe9\n"
    response = await post_raw(client, caller, body, CSV)
    details = rejected(response)
    assert list(details) == ["line 3"]
    assert details["line 3"].startswith("not UTF-8")
    assert response.json()["error"]["code"] == "not_utf8"
    assert await counts(state) == (0, 0)


async def test_past_the_row_cap_is_a_413(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    body = "prompt\n" + "p\n" * 100_001
    response = await post_raw(client, caller, body, CSV)
    error = response.json()["error"]
    assert (response.status_code, error["code"]) == (413, "too_many_rows"), error
    assert "100,000 rows" in error["message"]
    assert await counts(state) == (0, 0)


async def test_dry_run_and_idempotency_work_for_files(
    client: httpx.AsyncClient, caller: Caller, state: State
) -> None:
    csv = "prompt,width,height\na red bicycle,512,512\na blue kite,256,256\n"
    dry = await post_raw(client, caller, csv, CSV, params={"dry_run": "true"})
    assert dry.status_code == 200, dry.text
    assert (dry.json()["valid"], dry.json()["job_count"]) == (True, 2)
    assert await counts(state) == (0, 0)

    key = {"Idempotency-Key": "catalogue-2026-11"}
    first = await post_raw(client, caller, csv, CSV, headers=key)
    again = await post_raw(client, caller, csv, CSV, headers=key)
    assert (first.status_code, again.status_code) == (202, 200), again.text
    assert first.json()["id"] == again.json()["id"]
    other = await post_raw(client, caller, csv.replace("kite", "boat"), CSV, headers=key)
    assert other.status_code == 409, other.text
    assert await counts(state) == (1, 2)


async def test_a_body_over_the_size_cap_is_a_413_while_it_streams(
    state: State, caller: Caller
) -> None:
    app = create_app(state.settings.model_copy(update={"max_request_bytes": 4096}))
    app.state.darkroom = state

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
        yield b"prompt\n"
        for _ in range(100):
            yield b"a red bicycle\n" * 10

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.post(
            "/v1/batches", content=chunked(), headers={**caller.headers, "content-type": CSV}
        )
    assert response.status_code == 413, response.text
    assert response.json()["error"]["code"] == "payload_too_large"
    assert await counts(state) == (0, 0)
