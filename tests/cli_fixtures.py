"""The fixtures of the tests that run the `darkroom` command as a user does
(tests/test_cli_run.py, tests/test_cli_run_template.py): the API on a real port, and the
command's environment pointing at it. Each of those modules names this one in
`pytest_plugins`, so that where `api_url` and `env` come from is said where they are used."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.state import State
from tests.conftest import Caller
from tests.live import live_server


@pytest.fixture
def api_url(state: State) -> Iterator[str]:
    with live_server(state.settings) as url:
        yield url


@pytest.fixture
def env(api_url: str, caller: Caller, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DARKROOM_API_URL": api_url,
        "DARKROOM_API_KEY": caller.key,
        "DARKROOM_DATA_DIR": str(tmp_path / "cli-data"),
        "COLUMNS": "200",
    }
