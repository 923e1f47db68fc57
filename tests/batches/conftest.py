"""The State with the models of these tests configured, all on the built-in local
renderer: those of test_capabilities (`local`), or those and the routes of test_routes
(`routed`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.state import State
from tests.batches.test_capabilities import local_config
from tests.batches.test_routes import MODELS, ROUTES
from tests.jobs.sim_accounts import use_config


@pytest.fixture
async def local(state: State, tmp_path: Path) -> State:
    await use_config(state, local_config(), tmp_path)
    return state


@pytest.fixture
async def routed(state: State, tmp_path: Path) -> State:
    await use_config(state, local_config(MODELS, ROUTES), tmp_path)
    return state
