"""Python's cyclic garbage collector held off while a big batch is checked and stored.

Accepting a 50,000-row file allocates a few million objects that all stay alive until the
COPY is done (rows, jobs, rendered prompts, planned fields). Every 700 allocations the
collector walks the young objects, and every tenth of those walks the older ones again:
over a 50,000-row batch that took about a third of the validation and template time, and
found nothing to free. Reference counting frees everything else as usual; what cycles
were made are collected when the last bulk section ends.

Only CPU-bound sections after the request's body has been read are wrapped, so a slow
client cannot keep the collector off; sections may overlap (concurrent requests), and the
collector comes back when the last one ends."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

_active = 0
_was_enabled = True


@contextmanager
def collection_paused() -> Iterator[None]:
    global _active, _was_enabled
    if _active == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _active += 1
    try:
        yield
    finally:
        _active -= 1
        if _active == 0 and _was_enabled:
            gc.enable()
