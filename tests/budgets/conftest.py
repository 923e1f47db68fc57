from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from service.state import State
from tests.budgets.helpers import clear_ledgers


@pytest.fixture(autouse=True)
async def _empty_ledgers(state: State) -> AsyncIterator[None]:
    """Ledgers are not emptied with the other tables (an account's would carry over)."""
    await clear_ledgers(state)
    yield
    await clear_ledgers(state)
