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
import re
import socket
import sys
from pathlib import Path

ENV = "PROMETHEUS_MULTIPROC_DIR"


def metrics_dir(data_dir: Path) -> Path:
    """PROMETHEUS_MULTIPROC_DIR if set, else `<data dir>/metrics`."""
    given = os.environ.get(ENV)
    return Path(given) if given else (data_dir / "metrics").resolve()


def prepare(data_dir: Path) -> Path | None:
    """Make this process (and the processes it starts) write its metrics to the shared
    folder. Call it before the first metric is observed. A folder that cannot be made
    (a read-only working directory) leaves this process's metrics its own, said once on
    stderr, rather than stopping the process."""
    folder = metrics_dir(data_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        os.environ.pop(ENV, None)
        sys.stderr.write(
            f"darkroom: metrics are this process's only: cannot make {folder} "
            f"({exc.strerror or exc}); set {ENV} to a writable folder shared by every process\n"
        )
        return None
    os.environ[ENV] = str(folder)
    _use_shared_values()
    return folder


def ensure_dir() -> None:
    """A process started with PROMETHEUS_MULTIPROC_DIR set by hand (uvicorn on the app
    factory): the folder must exist before the first value is written."""
    given = os.environ.get(ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        _use_shared_values()


_HOST = re.sub(r"[^A-Za-z0-9.-]", "-", socket.gethostname()) or "host"


def process_identity() -> str:
    """Names this process's files. The pid alone is not enough: containers sharing one
    folder (a volume) each have their own pid 1, and would write into each other's file."""
    return f"{_HOST}-{os.getpid()}"


def _use_shared_values() -> None:
    """prometheus_client picks its value class when it is imported: pick it again now,
    with our file names. Our metrics all have labels, so their values are made on first
    use, after this."""
    from prometheus_client import values

    values.ValueClass = values.MultiProcessValue(process_identifier=process_identity)  # type: ignore[no-untyped-call]


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

    multiprocess.mark_process_dead(process_identity())  # type: ignore[no-untyped-call]


def active_dir() -> str | None:
    return os.environ.get(ENV) or None
