"""How busy the machine is and what it is, recorded next to every figure."""

from __future__ import annotations

import os
import platform
import re
import time

from bench._harness import log


def _cpu_times() -> tuple[int, int]:
    with open("/proc/stat") as stat:
        fields = [int(v) for v in stat.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_busy(seconds: float = 1.0) -> float:
    """Share of all cores busy over the next `seconds` (0..1), whoever uses them."""
    busy0, total0 = _cpu_times()
    time.sleep(seconds)
    busy1, total1 = _cpu_times()
    return round((busy1 - busy0) / max(1, total1 - total0), 3)


def wait_for_quiet(max_wait_s: float = 120.0, threshold: float = 0.15) -> dict[str, object]:
    """Wait (up to max_wait_s) until the machine is nearly idle, so other work (a test run
    in the same tree) does not end up in the figures; report what was seen."""
    began = time.monotonic()
    busy = cpu_busy()
    while busy > threshold and time.monotonic() - began < max_wait_s:
        log(f"machine busy ({busy:.0%} of all cores), waiting")
        busy = cpu_busy(2.0)
    return {
        "cpu_busy_before_start": busy,
        "quiet": busy <= threshold,
        "loadavg_1m": float(open("/proc/loadavg").read().split()[0]),
    }


class BusyMeter:
    """Share of all cores busy between start() and stop(): the bench's own processes,
    Postgres, Redis and anyone else."""

    def start(self) -> None:
        self._begin = _cpu_times()

    def stop(self) -> float:
        busy1, total1 = _cpu_times()
        busy0, total0 = self._begin
        return round((busy1 - busy0) / max(1, total1 - total0), 3)


def machine() -> dict[str, object]:
    cpu = "unknown"
    with open("/proc/cpuinfo") as info:
        match = re.search(r"^model name\s*:\s*(.+)$", info.read(), re.M)
        if match:
            cpu = match.group(1).strip()
    with open("/proc/meminfo") as info:
        match = re.search(r"MemTotal:\s+(\d+)", info.read())
        mem_kb = int(match.group(1)) if match else 0
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "ram_gib": round(mem_kb / 1024**2, 1),
        "python": platform.python_version(),
    }
