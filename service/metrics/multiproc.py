"""Where the processes of one deployment share their counters and histograms.

prometheus_client's multiprocess mode keeps each process's values in mmapped files in
PROMETHEUS_MULTIPROC_DIR, and a scrape sums them. It picks that mode when the variable
is set as its first metric value is made, so `serve` and `worker` call `prepare` before
anything observes a metric. `darkroom up` clears the folder before it starts anything: a
previous run's files would otherwise carry on into this run's totals.

Only counters and histograms are kept there. Values that are state (jobs by state,
queue depths, slots) are read at scrape time (service.metrics.snapshot) instead of kept
as multiprocess gauges, so a dead process's file never leaves a stale gauge behind.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(data_dir: Path) -> Path:
    """PROMETHEUS_MULTIPROC_DIR if set, else `<data dir>/metrics`."""
    given = os.environ.get(ENV)
    return Path(given) if given else (data_dir / "metrics").resolve()


def prepare(data_dir: Path) -> Path:
    """Make this process (and the processes it starts) write its metrics to the shared
    folder. Call it before the first metric is observed."""
    folder = metrics_dir(data_dir)
    folder.mkdir(parents=True, exist_ok=True)
    os.environ[ENV] = str(folder)
    values = sys.modules.get("prometheus_client.values")
    if values is not None:
        # Imported before the variable was set: metrics with labels make their values
        # when first used, so switching the value class now still covers all of ours.
        values.ValueClass = values.get_value_class()  # type: ignore[attr-defined]
    return folder


def ensure_dir() -> None:
    """A process started with PROMETHEUS_MULTIPROC_DIR set by hand: the folder must exist
    before the first value is written."""
    given = os.environ.get(ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)


def clear(folder: Path) -> None:
    """Before a run starts anything: the previous run's files go."""
    if not folder.is_dir():
        return
    for path in folder.glob("*.db"):
        path.unlink(missing_ok=True)


def process_exit() -> None:
    """A process is ending: its live gauges (none of ours, but a library's) stop counting."""
    if not os.environ.get(ENV):
        return
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]


def active_dir() -> str | None:
    return os.environ.get(ENV) or None
