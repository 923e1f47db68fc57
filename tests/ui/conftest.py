"""A real browser on the real app: Debian's Chromium driven by Playwright, the API on a
live port, the provider simulator behind it, and a worker running the jobs in the
test's event loop."""

from __future__ import annotations

import os
import shutil
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.async_api import Browser, async_playwright, expect

from service.state import State
from simulators import SimConfig, SimulatorHandle, run_simulator
from tests.conftest import ROOT
from tests.jobs.sim_accounts import SIM_TOKEN_ENV, sim_config, use_config
from tests.live import live_server

CHROMIUM = os.environ.get("DARKROOM_TEST_CHROMIUM", "/usr/bin/chromium")
ARTIFACTS = ROOT / ".artifacts" / "ui"
# Generous: CI machines run other suites beside this one. A wait ends as soon as its
# condition holds, so this only matters when something is wrong.
WAIT_MS = 20_000
expect.set_options(timeout=WAIT_MS)


def chromium_or_skip() -> str:
    """Chromium's path. Missing, the browser tests skip on a developer's machine and fail
    in CI (.ci/run installs it and sets CI)."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"Chromium is missing at {CHROMIUM}: .ci/run installs it (apt chromium)")
        pytest.skip(f"Chromium is not installed ({CHROMIUM}): apt-get install -y chromium")
    return path


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    path = chromium_or_skip()
    async with async_playwright() as playwright:
        launched = await playwright.chromium.launch(executable_path=path)
        try:
            yield launched
        finally:
            await launched.close()


@pytest.fixture
def artifacts() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass
class Stack:
    url: str
    state: State
    sim: SimulatorHandle


@pytest.fixture
async def stack(
    state: State, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Stack]:
    """The API on a live port with an OpenAI account at the simulator (model `gpt-sim`).
    Jobs take a little while there, two at a time, so progress can be watched; they run
    only inside `service.worker.running_worker`."""
    monkeypatch.setenv(SIM_TOKEN_ENV, "sim-token")
    async with run_simulator(SimConfig(latency={"kind": "fixed", "s": 0.3})) as sim:
        await use_config(state, sim_config(sim.url, openai_limits={"max_concurrent": 2}), tmp_path)
        with live_server(state.settings) as url:
            yield Stack(url, state, sim)
