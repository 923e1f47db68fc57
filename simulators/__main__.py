"""`python -m simulators --port 9100 [--config '{json}']`: the simulator in the
foreground, one process, until interrupted."""

from __future__ import annotations

import argparse

import uvicorn

from simulators.app import create_app
from simulators.config import SimConfig
from simulators.runner import server_options


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m simulators", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--config", default="{}", help="SimConfig fields as a JSON object")
    args = parser.parse_args()
    config = SimConfig.model_validate_json(args.config)
    try:
        import uvloop  # noqa: F401
    except ImportError:  # pragma: no cover
        loop = "asyncio"
    else:
        loop = "uvloop"
    options = server_options() | {"timeout_graceful_shutdown": 2}
    uvicorn.run(create_app(config), host=args.host, port=args.port, loop=loop, **options)


if __name__ == "__main__":
    main()
