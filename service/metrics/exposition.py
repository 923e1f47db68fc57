"""One scrape: the recorded metrics (every process's, when they share a multiprocess
folder; else this process's) and a snapshot of the state, in Prometheus' text format."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import Metric
from prometheus_client.multiprocess import MultiProcessCollector

from service.metrics import multiproc, snapshot
from service.state import State


class _ThisProcess:
    """The default registry (this process's recorded metrics, its process and platform
    facts), served inside a scrape's own registry."""

    def collect(self) -> Iterable[Metric]:
        return REGISTRY.collect()


async def scrape(state: State) -> bytes:
    current = await snapshot.read(state)
    return await asyncio.to_thread(render, current, multiproc.active_dir())


def _exists(folder: str) -> bool:
    """Made again if someone removed it while the processes ran (they write on)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return True


def render(current: snapshot.Snapshot, folder: str | None) -> bytes:
    """Blocking (a multiprocess folder's files are read and summed): run in a thread."""
    registry = CollectorRegistry()
    if folder is not None and _exists(folder):
        MultiProcessCollector(registry, path=folder)  # type: ignore[no-untyped-call]
    else:
        registry.register(_ThisProcess())
    registry.register(snapshot.SnapshotCollector(current))
    return generate_latest(registry)
