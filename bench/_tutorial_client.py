"""The client the tutorials teach, as the baseline for the dispatch benchmark: a thread pool
whose threads each take a prompt, create a Replicate prediction, then poll it until it is
done and download the image, with a fixed sleep after every request to stay under the
account's rate (1/rate x threads: 4 threads at 20 requests/s sleep 0.2 s). A 429 is
answered by sleeping for its Retry-After (1 s without one) and creating again.

Synchronous `requests`, one Session per thread, as in the tutorials.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import requests

FINAL = ("succeeded", "failed", "canceled")


@dataclass
class TutorialResult:
    submitted: int = 0
    succeeded: int = 0
    failed: int = 0
    rate_limited: int = 0
    errors: list[str] = field(default_factory=list)
    first_submit: float | None = None
    last_done: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)


def _job(
    session: requests.Session,
    base: str,
    model: str,
    payload: dict[str, Any],
    sleep_s: float,
    result: TutorialResult,
) -> None:
    while True:
        began = time.time()
        response = session.post(f"{base}/v1/models/{model}/predictions", json={"input": payload})
        with result.lock:
            if result.first_submit is None:
                result.first_submit = began
        if response.status_code == 429:
            with result.lock:
                result.rate_limited += 1
            time.sleep(float(response.headers.get("retry-after", 1)))
            continue
        response.raise_for_status()
        break
    with result.lock:
        result.submitted += 1
    prediction = response.json()
    time.sleep(sleep_s)
    while prediction["status"] not in FINAL:
        response = session.get(prediction["urls"]["get"])
        response.raise_for_status()
        prediction = response.json()
        time.sleep(sleep_s)
    if prediction["status"] != "succeeded":
        with result.lock:
            result.failed += 1
        return
    image = session.get(prediction["output"][0])
    image.raise_for_status()
    with result.lock:
        result.succeeded += 1
        result.last_done = time.time()


def run_tutorial_client(
    base: str,
    token: str,
    model: str,
    inputs: list[dict[str, Any]],
    *,
    threads: int,
    sleep_s: float,
) -> TutorialResult:
    work: queue.Queue[dict[str, Any]] = queue.Queue()
    for payload in inputs:
        work.put(payload)
    result = TutorialResult()

    def thread_main() -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            while True:
                try:
                    payload = work.get_nowait()
                except queue.Empty:
                    return
                try:
                    _job(session, base, model, payload, sleep_s, result)
                except requests.RequestException as exc:
                    with result.lock:
                        result.failed += 1
                        result.errors.append(repr(exc)[:200])

    pool = [threading.Thread(target=thread_main, name=f"tutorial-{n}") for n in range(threads)]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    return result
