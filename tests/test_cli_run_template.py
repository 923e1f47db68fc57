"""`darkroom run FILE --prompt/--output-name/--template/--name`: a plain CSV of columns
becomes a templated batch from the command line, as the README's CSV-to-gallery path runs
it: the real command against the API on a real port (tests/test_cli_run.py's way)."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from service.run_cli import run_file
from service.run_template import BatchOptions
from service.state import State
from tests.batches.files.posting import counts, stored_batch, stored_jobs
from tests.conftest import Caller
from tests.test_cli_run import assert_folder_matches_manifest, assert_one_line, darkroom, in_process

pytest_plugins = ("tests.cli_fixtures",)  # api_url, env
PROMPT = "E-commerce photo: {{ name }}, {{ color }}, studio lighting, white background"
PRODUCTS = 'sku,name,color\nA-1,Mug,red\nA-2,"Cup, large",blue\nA-3,Bowl,green\n'


async def test_a_csv_of_columns_renders_through_inline_templates_to_named_files(
    env: dict[str, str], caller: Caller, state: State, tmp_path: Path
) -> None:
    products, out = tmp_path / "products.csv", tmp_path / "out"
    products.write_text(PRODUCTS)
    ran = await darkroom(
        env,
        "run",
        str(products),
        "--prompt",
        PROMPT,
        "--output-name",
        "{{ sku }}",
        "--negative-prompt",
        "text, watermark",
        "--name",
        "spring mugs",
        "--out",
        str(out),
        "--json",
        worker=state,
    )
    assert ran.returncode == 0, ran.stderr
    summary = json.loads(ran.stdout)
    assert (summary["status"], summary["downloaded"], summary["exit_code"]) == ("succeeded", 3, 0)
    manifest = assert_folder_matches_manifest(out)
    assert [row["file"] for row in manifest["jobs"]] == ["A-1.png", "A-2.png", "A-3.png"]
    assert manifest["jobs"][1]["variables"] == {"sku": "A-2", "name": "Cup, large", "color": "blue"}

    jobs = await stored_jobs(state, summary["batch_id"])
    assert jobs[1].prompt == (
        "E-commerce photo: Cup, large, blue, studio lighting, white background"
    )
    assert jobs[0].params["negative_prompt"] == "text, watermark"
    batch = await stored_batch(state, summary["batch_id"])
    assert batch.name == "spring mugs"
    assert batch.templates is not None
    assert batch.templates["template"]["output_name"] == "{{ sku }}"


def run_in_process(
    capsys: pytest.CaptureFixture[str],
    path: Path,
    target: dict[str, Any],
    **options: str,
) -> subprocess.CompletedProcess[str]:
    return in_process(
        capsys,
        run_file,
        path,
        wait=False,
        out=None,
        as_json=True,
        options=BatchOptions(**options),
        **target,
    )


async def test_a_stored_template_by_name_and_version_renders_each_file_type(
    api_url: str,
    client: httpx.AsyncClient,
    caller: Caller,
    state: State,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    h = caller.headers
    await client.post("/v1/templates", json={"name": "photo", "prompt": PROMPT}, headers=h)
    v2 = {"name": "photo", "prompt": "v2: {{ name }}", "output_name": "{{ sku }}-v2"}
    await client.post("/v1/templates", json=v2, headers=h)
    target = {"url": api_url, "key": caller.key, "settings": state.settings}
    rows = [{"sku": "A-1", "name": "Mug", "color": "red"}]
    files = {
        "products.csv": PRODUCTS,
        "products.jsonl": "".join(json.dumps({"variables": row}) + "\n" for row in rows),
        "pipeline.yaml": "jobs:\n  - {sku: A-1, name: Mug, color: red}\n",
        # A JSON batch gets the fields set in it; the command line's win over the file's.
        "batch.json": json.dumps({"name": "file's", "jobs": [{"variables": rows[0]}]}),
    }
    for ref, prompt in [("photo@1", "E-commerce photo: Mug, red"), ("photo", "v2: Mug")]:
        for name, text in files.items():
            (tmp_path / name).write_text(text)
            ran = await asyncio.to_thread(
                run_in_process, capsys, tmp_path / name, target, template=ref, name="cli's"
            )
            assert ran.returncode == 0, (name, ran.stderr)
            batch_id = json.loads(ran.stdout)["batch_id"]
            first = (await stored_jobs(state, batch_id))[0]
            assert first.prompt.startswith(prompt), (name, first.prompt)
            assert (await stored_batch(state, batch_id)).name == "cli's"


async def test_a_row_missing_a_variable_exits_1_naming_its_line_and_creates_nothing(
    env: dict[str, str], state: State, tmp_path: Path
) -> None:
    products = tmp_path / "products.csv"
    products.write_text("sku,name,color\nA-1,Mug,red\nA-2,Cup,\n")
    ran = await darkroom(
        env, "run", str(products), "--prompt", PROMPT, "--out", str(tmp_path / "o")
    )
    assert_one_line(ran, 1, "line 3: prompt template: UndefinedError: 'color' is undefined")
    assert "HTTP 422" in ran.stderr
    assert ran.stderr.count("is undefined") == 1  # said once, not again as its detail
    assert not (tmp_path / "o").exists()
    assert await counts(state) == (0, 0)


async def test_clashing_options_exit_2_and_templates_the_server_refuses_exit_1(
    api_url: str, caller: Caller, state: State, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    products = tmp_path / "products.csv"
    products.write_text(PRODUCTS)
    target = {"url": api_url, "key": caller.key, "settings": state.settings}
    clashes: list[tuple[dict[str, str], str]] = [
        ({"template": "photo", "prompt": PROMPT}, "give one or the other"),
        ({"template": "photo", "output_name": "{{ sku }}"}, "--output-name would write"),
        ({"output_name": "{{ sku }}"}, "--output-name needs --prompt"),
    ]
    for options, text in clashes:
        ran = await asyncio.to_thread(run_in_process, capsys, products, target, **options)
        assert_one_line(ran, 2, text)
    unknown = await asyncio.to_thread(run_in_process, capsys, products, target, template="nope@3")
    assert_one_line(unknown, 1, "nope@3")
    bad_syntax = await asyncio.to_thread(
        run_in_process, capsys, products, target, prompt="{{ name "
    )
    assert_one_line(bad_syntax, 1, "TemplateSyntaxError")
    assert await counts(state) == (0, 0)
