"""The provider simulator, recording when each creation request met its limiter and what
the limiter said, for diagnosing 429s (`bench.dispatch ... --record-admissions`):

    python -m bench._sim_recorder --port P --config '{json}'
    GET /_bench/admissions -> [[seconds since reset, provider, null | "rate" | "concurrency"], ...]

Same app, same limiter (simulators.state.SimState.admit is wrapped, not changed).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import uvicorn
from starlette.types import Receive, Scope, Send

from simulators import state as sim_state
from simulators.app import create_app
from simulators.config import SimConfig
from simulators.runner import server_options

ADMISSIONS: list[tuple[float, str, str | None]] = []
_admit = sim_state.SimState.admit


def _recording_admit(self: sim_state.SimState, provider: Any) -> sim_state.Rejection | None:
    rejection = _admit(self, provider)
    cause = None if rejection is None else rejection.cause
    ADMISSIONS.append((round(time.monotonic() - self.t0, 6), provider, cause))
    return rejection


sim_state.SimState.admit = _recording_admit  # type: ignore[method-assign]


class RecordingApp:
    def __init__(self, config: SimConfig) -> None:
        self.app = create_app(config)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] == "/_bench/admissions":
            body = json.dumps(ADMISSIONS).encode()
            headers = [(b"content-type", b"application/json")]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": body})
            return
        if scope["type"] == "http" and scope["path"] == "/_sim/reset":
            ADMISSIONS.clear()
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--config", default="{}")
    args = parser.parse_args()
    config = SimConfig.model_validate_json(args.config)
    options = server_options() | {"timeout_graceful_shutdown": 2}
    uvicorn.run(RecordingApp(config), host=args.host, port=args.port, loop="uvloop", **options)


if __name__ == "__main__":
    main()
