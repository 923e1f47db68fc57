"""Live progress of a batch on stderr: done/total, rate, ETA, cost so far and failures.

A bar on a terminal; elsewhere (CI logs, a pipe) a plain line when the count moves, at
most every few seconds, so logs stay short."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from service.api_client import ApiClient

POLL_S = 0.5
PLAIN_EVERY_S = 5.0


class Rate:
    """Jobs per second since following began, and the time left at that rate."""

    def __init__(self, done: int) -> None:
        self._start, self._done0 = time.monotonic(), done

    def per_s(self, done: int) -> float:
        elapsed = time.monotonic() - self._start
        return (done - self._done0) / elapsed if elapsed > 0 else 0.0

    def eta(self, done: int, total: int) -> str:
        rate = self.per_s(done)
        if done >= total:
            return "done"
        if rate <= 0:
            return "eta ?"
        seconds = int((total - done) / rate)
        return f"eta {seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def counts_of(batch: dict[str, Any]) -> tuple[int, int, int]:
    """(done, total, failed): done counts every job that has finished, however it ended."""
    counts = batch["counts"]
    done = counts["succeeded"] + counts["failed"] + counts["cancelled"]
    return done, counts["total"], counts["failed"]


def line(batch: dict[str, Any], rate: Rate) -> str:
    done, total, failed = counts_of(batch)
    return (
        f"{done}/{total} · {rate.per_s(done):.1f} jobs/s · {rate.eta(done, total)} · "
        f"${batch['cost_usd']:.4f} · {failed} failed"
    )


def follow(
    api: ApiClient, batch: dict[str, Any], console: Console, *, final: set[str]
) -> dict[str, Any]:
    """Poll the batch until its status is final; return its last state."""
    rate = Rate(counts_of(batch)[0])
    if not console.is_terminal:
        return _follow_plain(api, batch, console, rate, final)
    columns = (
        TextColumn("generating"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[detail]}"),
    )
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("", total=batch["counts"]["total"], detail="")
        while batch["status"] not in final:
            time.sleep(POLL_S)
            batch = api.call("GET", f"/v1/batches/{batch['id']}")
            done, _, failed = counts_of(batch)
            detail = (
                f"{rate.per_s(done):.1f}/s {rate.eta(done, batch['counts']['total'])} "
                f"${batch['cost_usd']:.4f} {failed} failed"
            )
            progress.update(task, completed=done, detail=detail)
    return batch


def _follow_plain(
    api: ApiClient, batch: dict[str, Any], console: Console, rate: Rate, final: set[str]
) -> dict[str, Any]:
    said, said_at = -1, 0.0
    while True:
        done = counts_of(batch)[0]
        now = time.monotonic()
        if batch["status"] in final or (done != said and now - said_at >= PLAIN_EVERY_S):
            console.print(line(batch, rate), highlight=False)
            said, said_at = done, now
        if batch["status"] in final:
            return batch
        time.sleep(POLL_S)
        batch = api.call("GET", f"/v1/batches/{batch['id']}")
