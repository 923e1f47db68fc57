"""Processes that share a PROMETHEUS_MULTIPROC_DIR: what each records is summed by one
scrape, whichever process serves it; `darkroom up` starts from an empty folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from service.metrics import multiproc
from service.metrics.exposition import render
from service.metrics.snapshot import Snapshot
from tests.metrics.scraping import parse, value

ROOT = Path(__file__).resolve().parents[2]

# A process that records like an API and a worker do. prometheus_client is imported
# before the folder is prepared, as a library might: prepare must still take effect.
WRITER = textwrap.dedent(
    """
    import sys
    import prometheus_client
    from pathlib import Path
    from service.metrics import multiproc
    multiproc.prepare(Path(sys.argv[1]))
    from service.metrics import recorded
    from service.providers.base import ProviderRateLimited
    for _ in range(int(sys.argv[2])):
        recorded.http_request("/v1/batches/{batch_id}", "GET", 200, 0.02)
        try:
            with recorded.provider_request("openai", "generate"):
                raise ProviderRateLimited("slow down")
        except ProviderRateLimited:
            pass
        recorded.delivery("webhook", True, False, 0.3)
    multiproc.process_exit()
    """
)


def write_from_a_process(data_dir: Path, times: int) -> None:
    env = {k: v for k, v in os.environ.items() if k != multiproc.ENV}
    subprocess.run(
        [sys.executable, "-c", WRITER, str(data_dir), str(times)],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=60,
    )


def test_two_processes_are_summed_by_one_scrape(tmp_path: Path) -> None:
    write_from_a_process(tmp_path, 2)
    write_from_a_process(tmp_path, 3)
    folder = tmp_path / "metrics"
    assert len(list(folder.glob("*.db"))) >= 2  # one file per process and kind

    samples = parse(render(Snapshot(), str(folder)).decode())
    http = {"route": "/v1/batches/{batch_id}", "method": "GET", "status": "200"}
    assert value(samples, "darkroom_http_request_duration_seconds_count", **http) == 5
    assert value(samples, "darkroom_http_request_duration_seconds_sum", **http) == pytest.approx(
        0.1
    )
    assert value(samples, "darkroom_provider_rate_limited_total", account="openai") == 5
    latency = {"account": "openai", "operation": "generate", "outcome": "rate_limited"}
    assert value(samples, "darkroom_provider_request_duration_seconds_count", **latency) == 5
    delivered = {"sink": "webhook", "outcome": "delivered"}
    assert value(samples, "darkroom_delivery_duration_seconds_count", **delivered) == 5


def test_a_new_run_starts_from_an_empty_folder(tmp_path: Path) -> None:
    write_from_a_process(tmp_path, 4)
    folder = tmp_path / "metrics"
    multiproc.clear(folder)
    write_from_a_process(tmp_path, 1)
    samples = parse(render(Snapshot(), str(folder)).decode())
    assert value(samples, "darkroom_provider_rate_limited_total", account="openai") == 1


def test_a_folder_that_cannot_be_made_leaves_the_process_its_own_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv(multiproc.ENV, raising=False)
    not_a_folder = tmp_path / "a-file"
    not_a_folder.write_text("")
    assert multiproc.prepare(not_a_folder) is None
    assert multiproc.ENV not in os.environ
    assert "cannot make" in capsys.readouterr().err
