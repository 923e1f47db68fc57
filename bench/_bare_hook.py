"""The bench's baseline: a bare FastAPI endpoint that only parses the body, served by
uvicorn with the same defaults `darkroom serve` uses.

    python -m bench._bare_hook --port 9000
"""

from __future__ import annotations

import argparse
import json

import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

app = FastAPI()


@app.post("/v1/hooks/{integration_id}")
async def hook(integration_id: str, request: Request) -> JSONResponse:
    json.loads(await request.body())
    return JSONResponse({"event_id": "evt_0", "job_id": None, "status": "accepted"}, 202)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
