"""`darkroom worker` with timing probes, for diagnosing 429s (`bench.dispatch ...
--trace-workers`). Nothing in service/ changes: a few functions are wrapped here.

Per provider submission it records when the job's rate token was taken (just before
AccountLimiter.wait_turn's last, successful call), when wait_turn returned, when the
request reached httpx's transport and when the response headers came back; and, every
10 ms, how late the event loop woke a sleeping task. Written as JSON to
$DARKROOM_TRACE_FILE when the worker exits.

What-ifs (bench only, to try a suggested change to service/ratelimit.py without editing
it): DARKROOM_BENCH_WHATIF=headroom3,gentle (the former "forgive" is now what
service/ratelimit.py does: a lone 429 keeps the rate)
- headroom3: pace 3% under the configured rate instead of 2%.
- gentle: near the configured rate (>= 90% of it) a 429 cuts by 10%, not 30%, and the
  rate climbs back in 5 s, not 30 s; further down, as before.
- hintcap: near the configured rate a retry hint blocks the account for at most two
  intervals (the simulator, like Replicate, rounds a few ms up to "1 second").
- confirm: when a submission reaches httpx's transport, the limiter is told when it
  really left: the next token is not given before that moment + one interval (burst 1
  accounts), so a request delayed after its token cannot be followed too closely.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import os
import time
from typing import Any

import httpx

from service import ratelimit
from service.cli import app

TRACE_FILE = os.environ.get("DARKROOM_TRACE_FILE", "worker-trace.json")
_job: contextvars.ContextVar[str | None] = contextvars.ContextVar("trace_job", default=None)
SENDS: dict[str, dict[str, float]] = {}
LAG_MS: list[float] = []

WHATIF = {w for w in os.environ.get("DARKROOM_BENCH_WHATIF", "").split(",") if w}
if "headroom3" in WHATIF:
    old = f"(1 - {ratelimit.HEADROOM})"
    assert old in ratelimit._WAIT_TURN, "service/ratelimit.py changed: update the what-if"
    ratelimit._WAIT_TURN = ratelimit._WAIT_TURN.replace(old, "(1 - 0.03)")


def _replace(text: str, old: str, new: str) -> str:
    assert old in text, f"service/ratelimit.py changed: update the what-if ({old!r})"
    return text.replace(old, new)


if "gentle" in WHATIF:
    ratelimit._RATE_LIMITED = _replace(
        ratelimit._RATE_LIMITED,
        f"local new_rate = math.max(rate * {ratelimit.DECREASE}, 0.05)",
        f"""local factor = {ratelimit.DECREASE}
  if configured > 0 and rate >= 0.9 * configured then factor = 0.9 end
  local new_rate = math.max(rate * factor, 0.05)""",
    )
    ratelimit._WAIT_TURN = _replace(
        ratelimit._WAIT_TURN,
        f"rate = math.min(w_max, rate + w_max * (1 - {ratelimit.DECREASE}) / "
        f"{ratelimit.RECOVER_S} * dt)",
        f"""local climb = w_max * (1 - {ratelimit.DECREASE}) / {ratelimit.RECOVER_S}
    if configured > 0 and w_max >= 0.9 * configured then climb = w_max * 0.1 / 5 end
    rate = math.min(w_max, rate + climb * dt)""",
    )
if "hintcap" in WHATIF:
    ratelimit._RATE_LIMITED = _replace(
        ratelimit._RATE_LIMITED,
        "if hint > 0 then",
        """local drawn_at = tonumber(lim[1]) or configured
if hint > 0 and configured > 0 and drawn_at >= 0.9 * configured then
  hint = math.min(hint, 2000 / configured)
end
if hint > 0 then""",
    )

# KEYS: limiter. ARGV: sent (ms), configured rate.
_CONFIRM = f"""
local lim = redis.call('HMGET', KEYS[1], 'tat', 'rate')
local rate = tonumber(lim[2]) or tonumber(ARGV[2])
if rate == nil or rate <= 0 then return 0 end
local want = tonumber(ARGV[1]) + 1000 / (rate * (1 - {ratelimit.HEADROOM}))
if want > (tonumber(lim[1]) or 0) then
  redis.call('HSET', KEYS[1], 'tat', want)
  redis.call('HINCRBY', KEYS[1], 'confirm_pushed', 1)
  return 1
end
return 0
"""
_LIMITERS: dict[str, ratelimit.AccountLimiter] = {}
_BACKGROUND: set[asyncio.Task[Any]] = set()


def _confirm_send(job: str, sent_ms: int) -> None:
    limiter = _LIMITERS.pop(job, None)
    if limiter is None or limiter.limits.burst != 1 or not limiter.limits.rate_per_s:
        return
    script = limiter.redis.register_script(_CONFIRM)
    task = asyncio.get_running_loop().create_task(
        script(
            keys=[ratelimit.limiter_key(limiter.account)], args=[sent_ms, limiter.limits.rate_per_s]
        )
    )
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


_init = ratelimit.AccountLimiter.__init__
_wait_turn = ratelimit.AccountLimiter.wait_turn


def __init__(self: ratelimit.AccountLimiter, *args: Any, **kwargs: Any) -> None:
    _init(self, *args, **kwargs)
    script = self._wait_turn

    async def timed(*, keys: list[str], args: list[Any]) -> Any:
        asked = time.time()
        result = await script(keys=keys, args=args)
        if int(result) <= 0:  # the token was taken (ARGV[4] is the job id)
            SENDS.setdefault(str(args[3]), {})["token"] = asked
        return result

    self._wait_turn = timed  # type: ignore[assignment]


async def wait_turn(self: ratelimit.AccountLimiter, job_id: str) -> None:
    await _wait_turn(self, job_id)
    if "confirm" in WHATIF:
        _LIMITERS[job_id] = self
    SENDS.setdefault(job_id, {})["turn_returned"] = time.time()
    _job.set(job_id)


ratelimit.AccountLimiter.__init__ = __init__  # type: ignore[method-assign]
ratelimit.AccountLimiter.wait_turn = wait_turn  # type: ignore[method-assign]

_handle = httpx.AsyncHTTPTransport.handle_async_request


async def handle_async_request(
    self: httpx.AsyncHTTPTransport, request: httpx.Request
) -> httpx.Response:
    job = _job.get()
    record = request.method == "POST" and job is not None and "predictions" in request.url.path
    if record:
        SENDS.setdefault(job, {})["transport"] = time.time()  # type: ignore[index]
        if "confirm" in WHATIF:
            _confirm_send(job, ratelimit.now_ms())  # type: ignore[arg-type]
    response = await _handle(self, request)
    if record:
        SENDS[job]["response"] = time.time()  # type: ignore[index]
        SENDS[job]["status"] = response.status_code  # type: ignore[index]
        _job.set(None)
    return response


httpx.AsyncHTTPTransport.handle_async_request = handle_async_request  # type: ignore[method-assign]


def _install_lag_probe() -> None:
    import service.worker as worker

    original = worker.run_workers

    async def run_workers(settings: Any) -> None:
        async def probe() -> None:
            while True:
                began = time.perf_counter()
                await asyncio.sleep(0.01)
                LAG_MS.append((time.perf_counter() - began - 0.01) * 1000)

        task = asyncio.create_task(probe())
        try:
            await original(settings)
        finally:
            task.cancel()
            with open(TRACE_FILE, "w") as out:
                json.dump({"sends": SENDS, "loop_lag_ms": LAG_MS, "segments": SEGMENTS}, out)

    worker.run_workers = run_workers  # type: ignore[assignment]


# --- segment timing (DARKROOM_BENCH_SEGMENTS=1): where a job's wall time goes -----------

SEGMENTS: dict[str, list[float]] = {}


def _timed(name: str, function: Any) -> Any:
    async def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return await function(*args, **kwargs)
        finally:
            SEGMENTS.setdefault(name, []).append((time.perf_counter() - began) * 1000)

    return wrapper


def _timed_scope(name: str, factory: Any) -> Any:
    import contextlib

    @contextlib.asynccontextmanager
    async def scope(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        async with factory(*args, **kwargs) as session:
            inside = time.perf_counter()
            yield session
            body = time.perf_counter()
        done = time.perf_counter()
        SEGMENTS.setdefault(name + " (body)", []).append((body - inside) * 1000)
        SEGMENTS.setdefault(name + " (commit+close)", []).append((done - body) * 1000)
        SEGMENTS.setdefault(name + " (total)", []).append((done - began) * 1000)

    return scope


def _install_segments() -> None:
    from service.jobs import attempts, runner
    from service.jobs import service as jobs_service
    from service.providers import images, openai
    from service.storage.local import LocalStorage

    runner.run_granted = _timed("run_granted (whole job)", runner.run_granted)
    attempts.session_scope = _timed_scope("session_scope", attempts.session_scope)
    jobs_service.start_attempt = _timed("start_attempt", jobs_service.start_attempt)
    jobs_service.record_success = _timed("record_success", jobs_service.record_success)
    openai.OpenAIImagesProvider.generate = _timed(  # type: ignore[method-assign]
        "openai generate (HTTP + check)", openai.OpenAIImagesProvider.generate
    )
    openai.checked_image = _timed("checked_image (thread)", images.checked_image)
    LocalStorage.put = _timed("storage.put (thread)", LocalStorage.put)  # type: ignore[method-assign]
    attempts.enqueue_deliveries = _timed("enqueue_deliveries", attempts.enqueue_deliveries)
    ratelimit.AccountLimiter.release = _timed(  # type: ignore[method-assign]
        "limiter.release", ratelimit.AccountLimiter.release
    )


if os.environ.get("DARKROOM_BENCH_SEGMENTS"):
    _install_segments()


_install_lag_probe()

if __name__ == "__main__":
    app(["worker"])
