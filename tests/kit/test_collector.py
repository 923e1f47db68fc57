"""The collector is held off while any bulk section runs, and only then."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from service.kit.collector import collection_paused


@pytest.fixture(autouse=True)
def collector_on() -> Iterator[None]:
    gc.enable()
    yield
    gc.enable()


def test_overlapping_sections_end_with_the_last_one() -> None:
    first, second = collection_paused(), collection_paused()
    first.__enter__()
    assert not gc.isenabled()
    second.__enter__()
    first.__exit__(None, None, None)  # concurrent requests end in any order
    assert not gc.isenabled()
    second.__exit__(None, None, None)
    assert gc.isenabled()


def test_a_failing_section_turns_it_back_on() -> None:
    with pytest.raises(ValueError, match="bad row"), collection_paused():
        raise ValueError("bad row")
    assert gc.isenabled()


def test_a_collector_someone_turned_off_stays_off() -> None:
    gc.disable()
    with collection_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()
