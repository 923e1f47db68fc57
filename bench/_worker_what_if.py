"""`python -m service.cli worker`, with arq's poll_delay overridden: a what-if only.

service/worker.py builds its Workers with poll_delay=0.2. arq refills free slots only
once per poll (its semaphore is max_jobs + 1 wide, so a poll stops as soon as every
slot is busy), which caps a worker at max_jobs / poll_delay jobs per second whenever a
job is shorter than poll_delay. This launcher shows what another poll_delay would give,
without touching service/. Set BENCH_POLL_DELAY_S.
"""

from __future__ import annotations

import os
from typing import Any

import arq.worker

from service.cli import app

_original_init = arq.worker.Worker.__init__


def _init_with_poll_delay(self: arq.worker.Worker, *args: Any, **kwargs: Any) -> None:
    kwargs["poll_delay"] = float(os.environ["BENCH_POLL_DELAY_S"])
    _original_init(self, *args, **kwargs)


if __name__ == "__main__":
    arq.worker.Worker.__init__ = _init_with_poll_delay  # type: ignore[method-assign]
    app(["worker"])
