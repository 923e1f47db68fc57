"""Inbound CMS webhooks: how fast POST /v1/hooks/{id} takes signed deliveries, against a
bare FastAPI endpoint that only parses the same body, measured in the same run.

Target (issue 8): at 32 concurrent senders, throughput >= 0.5 x the bare endpoint's,
and p99 <= 50 ms (or, when the bare endpoint's own p99 is higher on a busy machine,
<= 2 x that).

The real app runs as `python -m service.cli serve` (uvicorn) on a fresh database and
Redis db; no worker is needed, since accepting a hook only enqueues. The baseline runs
as `python -m bench._bare_hook` (uvicorn, same defaults). Every delivery is a generic
(Standard Webhooks) request with a unique webhook-id and a real signature, signed
before its phase starts so the senders' own work is only I/O. The senders are 32
asyncio connections speaking HTTP/1.1 keep-alive on raw streams (a full HTTP client
would cost more CPU than the server on a 2-core machine). Phases alternate, bare then
Darkroom, `--rounds` times; each side's figures pool its rounds. After the run the
bench checks that Postgres holds one accepted event and one job per 202.

    .venv/bin/python -m bench.ingest [--seconds 8] [--rounds 2] [--senders 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx

from bench._harness import BenchEnv, bench_env, free_port, log
from bench._machine import BusyMeter, machine, wait_for_quiet
from service.kit.signing import sign

ROOT = Path(__file__).resolve().parents[1]
TARGET_RATIO = 0.5
TARGET_P99_MS = 50.0


def article_body(n: int) -> bytes:
    data = {
        "id": f"post-{n}",
        "title": f"Field notes, part {n}",
        "excerpt": "Night walks with a lamp and a field guide, counting what the light brings. "
        * 3,
        "slug": f"field-notes-{n}",
        "url": f"https://blog.example/field-notes-{n}",
        "tags": ["nature", "city"],
        "authors": ["Ada"],
        "status": "published",
    }
    return json.dumps({"type": "article.published", "data": data}).encode()


def requests_for(secret: str, path: str, port: int, count: int, offset: int) -> list[bytes]:
    """Whole HTTP/1.1 requests, signed now (the replay window is 5 minutes)."""
    now = int(time.time())
    out = []
    for n in range(offset, offset + count):
        body = article_body(n)
        msg_id = f"msg_bench_{n}"
        head = (
            f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\n"
            f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
            f"webhook-id: {msg_id}\r\nwebhook-timestamp: {now}\r\n"
            f"webhook-signature: {sign(secret, msg_id, now, body)}\r\n\r\n"
        )
        out.append(head.encode() + body)
    return out


async def _send(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n")[1:]:
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    await reader.readexactly(length)
    return status


async def phase(port: int, requests: list[bytes], senders: int, seconds: float) -> dict[str, Any]:
    """`senders` connections send back to back for `seconds`; latency per request."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    queue = iter(requests)
    deadline = time.perf_counter() + seconds

    async def sender() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while time.perf_counter() < deadline:
                request = next(queue, None)
                if request is None:
                    return
                began = time.perf_counter()
                status = await _send(reader, writer, request)
                latencies.append(time.perf_counter() - began)
                statuses[status] = statuses.get(status, 0) + 1
        finally:
            writer.close()

    meter = BusyMeter()
    meter.start()
    began = time.perf_counter()
    await asyncio.gather(*(sender() for _ in range(senders)))
    elapsed = time.perf_counter() - began
    return {"latencies": latencies, "statuses": statuses, "s": elapsed, "busy": meter.stop()}


def summary(phases: list[dict[str, Any]]) -> dict[str, Any]:
    latencies = sorted(x for p in phases for x in p["latencies"])
    count = len(latencies)
    seconds = sum(p["s"] for p in phases)
    statuses: dict[str, int] = {}
    for p in phases:
        for status, n in p["statuses"].items():
            statuses[str(status)] = statuses.get(str(status), 0) + n
    quantiles = statistics.quantiles(latencies, n=100)
    return {
        "requests": count,
        "rps": round(count / seconds, 1),
        "p50_ms": round(quantiles[49] * 1000, 2),
        "p99_ms": round(quantiles[98] * 1000, 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        "statuses": statuses,
        "cpu_busy_all_cores": [p["busy"] for p in phases],
    }


async def _create_integration(base: str, key: str) -> tuple[str, str]:
    body = {
        "name": "bench",
        "kind": "generic",
        "inbound": {},
        "template": {
            "prompt": "Editorial illustration for {{ title }}. {{ excerpt | truncate(120) }}",
            "model": "local/procedural",
            "width": 512,
            "height": 256,
            "format": "webp",
            "output_name": "{{ slug }}-cover",
        },
    }
    async with httpx.AsyncClient(base_url=base) as client:
        response = await client.post(
            "/v1/integrations", json=body, headers={"authorization": f"Bearer {key}"}
        )
    response.raise_for_status()
    created = response.json()
    return created["id"], created["secret"]


def start_bare(env: BenchEnv) -> int:
    """`python -m bench._bare_hook`, stopped with the bench's other children."""
    port = free_port()
    logfile = (env.workdir / "bare.log").open("ab")
    child = subprocess.Popen(
        [sys.executable, "-m", "bench._bare_hook", "--port", str(port)],
        cwd=ROOT,
        stdout=logfile,
        stderr=subprocess.STDOUT,
    )
    env.children.append(child)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.post(f"http://127.0.0.1:{port}/v1/hooks/x", content=b"{}", timeout=1)
            return port
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError("the bare endpoint did not start in 30 s")


async def _measure(env: BenchEnv, args: argparse.Namespace) -> dict[str, Any]:
    key = await env.create_api_key()
    base = env.start_api()
    real_port = int(base.rsplit(":", 1)[1])
    bare_port = start_bare(env)
    integration_id, secret = await _create_integration(base, key)
    path = f"/v1/hooks/{integration_id}"
    # More than either side can take in a phase (a phase that runs out ends early, and
    # its rate is still what it sent over the time it took).
    per_phase = {bare_port: int(args.seconds * 10_000), real_port: int(args.seconds * 2_000)}
    offset = 0
    bare: list[dict[str, Any]] = []
    real: list[dict[str, Any]] = []
    # A short warm-up of each (imports, pools, caches), not counted.
    for port in (bare_port, real_port):
        warm = requests_for(secret, path, port, 500, offset)
        offset += len(warm)
        await phase(port, warm, args.senders, 1.0)
    for number in range(args.rounds):
        for port, sink in ((bare_port, bare), (real_port, real)):
            requests = requests_for(secret, path, port, per_phase[port], offset)
            offset += len(requests)
            result = await phase(port, requests, args.senders, args.seconds)
            sink.append(result)
            side = "bare" if sink is bare else "darkroom"
            log(f"round {number} {side}: {len(result['latencies'])} in {result['s']:.1f} s")
    figures: dict[str, Any] = {"bare": summary(bare), "darkroom": summary(real)}
    figures["verified"] = await _verify(env, integration_id, figures["darkroom"]["statuses"])
    return figures


async def _verify(env: BenchEnv, integration_id: str, statuses: dict[str, int]) -> str:
    pg = await asyncpg.connect(env.pg_dsn)
    try:
        accepted = await pg.fetchval(
            "SELECT count(*) FROM inbound_events WHERE integration_id = $1 AND verdict = 'accepted'"
            " AND job_id IS NOT NULL",
            uuid.UUID(integration_id),
        )
        jobs = await pg.fetchval("SELECT count(*) FROM jobs")
    finally:
        await pg.close()
    # Warm-up deliveries were accepted too: every 202 of the run has its event and job.
    if statuses.get("202", 0) > accepted or accepted != jobs or set(statuses) != {"202"}:
        raise RuntimeError(f"statuses {statuses}, {accepted} accepted events, {jobs} jobs")
    return f"every answer 202; {accepted} accepted events, each with its job ({jobs} jobs)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--senders", type=int, default=32)
    parser.add_argument("--no-wait-for-quiet", action="store_true")
    args = parser.parse_args()
    quiet = {} if args.no_wait_for_quiet else wait_for_quiet()
    with bench_env() as env:
        figures = asyncio.run(_measure(env, args))
    bare, real = figures["bare"], figures["darkroom"]
    ratio = real["rps"] / bare["rps"]
    p99_bound = max(TARGET_P99_MS, 2 * bare["p99_ms"])
    figures.update(
        {
            "benchmark": "ingest",
            "senders": args.senders,
            "seconds_per_phase": args.seconds,
            "rounds": args.rounds,
            "throughput_ratio": round(ratio, 3),
            "target_ratio": TARGET_RATIO,
            "p99_bound_ms": p99_bound,
            "target_met": ratio >= TARGET_RATIO and real["p99_ms"] <= p99_bound,
            "load": quiet,
            "machine": machine(),
        }
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
