"""A provider simulator: one HTTP server that speaks Replicate's and OpenAI's image APIs
on their real wire protocols, so that adapters, fault tests and benchmarks run offline.

Run it:

    python -m simulators --port 9100 --config '{"latency": {"kind": "fixed", "s": 2}}'

or, from async tests and benchmarks:

    async with run_simulator(SimConfig(rate_per_s=10)) as sim:
        ...  # talk to sim.url with Authorization: Bearer sim-token
        await sim.configure(rate_per_s=5)
        stats = await sim.stats()

Routes (auth: `Authorization: Bearer <config.token>` on every provider route but /files):

- Replicate: `POST /v1/models/{owner}/{name}/predictions`, `POST /v1/predictions`,
  `GET /v1/predictions/{id}`, `POST /v1/predictions/{id}/cancel`,
  `GET /v1/webhooks/default/secret`, and output files at `GET /files/{id}.{ext}`.
- OpenAI: `POST /v1/images/generations`, `POST /v1/images/edits` (simulators.openai_edits).
- OAuth client credentials (Baidu's token endpoint): `POST /oauth/2.0/token`, with its
  controls under `/_sim/oauth/...` (simulators.oauth).
- Control (no auth, not counted): `GET|PATCH /_sim/config`, `POST /_sim/reset`,
  `GET /_sim/stats` (every field is documented in `simulators.state`).

The configuration is `SimConfig` (simulators.config); behaviour per provider is
described in simulators.replicate and simulators.openai.
"""

from simulators.app import create_app
from simulators.config import SimConfig
from simulators.runner import (
    SimulatorHandle,
    SyncSimulatorHandle,
    run_simulator,
    running_simulator,
    start_simulator_process,
)

__all__ = [
    "SimConfig",
    "SimulatorHandle",
    "SyncSimulatorHandle",
    "create_app",
    "run_simulator",
    "running_simulator",
    "start_simulator_process",
]
