"""How long a 50,000-row CSV batch takes to be accepted: POST /v1/batches with
`Content-Type: text/csv` to 202, over real HTTP.

Target (issue 11): 50,000 rows accepted (202, every row durable) in <= 5 s. The CSV is
templated as the teams that use it write it: sku, name and color columns rendered by a
batch `template` (prompt and output_name) sent in a multipart form, plus width and
height columns. The API runs as `python -m service.cli serve` (uvicorn) against a
fresh database and Redis db; after every POST the bench checks that Postgres holds
every row of that batch and that the arq queue grew by as many.

With --profile, the app is also called once in this process over ASGI under cProfile
(top 40 by cumulative time written next to the workdir).

    .venv/bin/python -m bench.accept_csv [--rows 50000] [--runs 3] [--warmup 1] [--raw]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import csv
import io
import json
import pstats
import statistics
from typing import Any

import httpx

from bench._accept import timed_posts
from bench._harness import BenchEnv, bench_env
from bench._machine import machine, wait_for_quiet
from service.app import create_app
from service.state import build_state, close_state

TARGET_S = 5.0
COLORS = ("red", "blue", "green", "black", "white", "ochre")
TEMPLATE = {
    "prompt": "E-commerce photo: {{ name }}, {{ color }}, studio lighting, white background",
    "output_name": "{{ sku }}",
}


def csv_body(rows: int, seed: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["sku", "name", "color", "width", "height"])
    for n in range(rows):
        writer.writerow(
            [f"SKU-{seed}-{n:06d}", f"mug, model {n}", COLORS[n % len(COLORS)], 512, 512]
        )
    return out.getvalue().encode()


def request_parts(body: bytes, raw: bool) -> dict[str, Any]:
    """httpx keyword arguments: the CSV as a form's file with the template beside it,
    or (--raw) the bare CSV body with a prompt column instead."""
    if raw:
        text = body.decode().replace("sku,name,color", "sku,prompt,color", 1)
        return {"content": text.encode(), "headers": {"content-type": "text/csv"}}
    return {
        "files": {"file": ("catalogue.csv", body, "text/csv")},
        "data": {"batch": json.dumps({"name": "catalogue", "template": TEMPLATE})},
    }


async def _profile_once(env: BenchEnv, key: str, body: bytes, raw: bool) -> str:
    state = await build_state(env.settings)
    app = create_app(env.settings)
    app.state.darkroom = state
    profiler = cProfile.Profile()
    parts = request_parts(body, raw)
    headers = {"authorization": f"Bearer {key}", **parts.pop("headers", {})}
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://asgi") as client:
            with profiler:
                response = await client.post("/v1/batches", headers=headers, **parts)
            assert response.status_code == 202, response.text
    finally:
        await close_state(state)
    report = env.workdir.parent / f"darkroom-bench-accept-csv-{env.run_id}.prof.txt"
    with report.open("w") as out:
        pstats.Stats(profiler, stream=out).sort_stats("cumulative").print_stats(40)
    return str(report)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--raw", action="store_true", help="bare text/csv body, no template")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    args = parser.parse_args()
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet()
    bodies = [csv_body(args.rows, seed=n) for n in range(args.warmup + args.runs + 1)]
    with bench_env() as env:
        figures = asyncio.run(_measure(env, args, bodies))
    figures["load"] = quiet
    print(json.dumps(figures, indent=2))


async def _measure(env: BenchEnv, args: argparse.Namespace, bodies: list[bytes]) -> dict[str, Any]:
    key = await env.create_api_key()
    count = args.warmup + args.runs
    requests = [request_parts(body, args.raw) for body in bodies[:count]]
    runs = await timed_posts(env, key, requests, warmup=args.warmup, jobs=args.rows)
    measured = sorted(r["s"] for r in runs if r["kind"] == "measured")
    p50 = statistics.median(measured)
    figures: dict[str, Any] = {
        "benchmark": "accept_csv",
        "rows": args.rows,
        "form": "text/csv body" if args.raw else "multipart: CSV file + batch template",
        "runs": len(measured),
        "warmup_runs": args.warmup,
        "body_bytes": len(bodies[0]),
        "p50_s": round(p50, 4),
        "min_s": round(measured[0], 4),
        "max_s": round(measured[-1], 4),
        "rows_per_s": round(args.rows / p50),
        "cpu_busy_all_cores_per_run": [r["cpu_busy_all_cores"] for r in runs[args.warmup :]],
        "target_s": TARGET_S,
        "target_met": p50 <= TARGET_S,
        "verified": "every run: 202, COUNT(*) of the batch's jobs == rows, ZCARD grew by rows",
    }
    if args.profile:
        figures["cprofile_report"] = await _profile_once(env, key, bodies[count], args.raw)
    figures["machine"] = machine()
    return figures


if __name__ == "__main__":
    main()
