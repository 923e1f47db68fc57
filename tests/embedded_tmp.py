"""Data directories for embedded servers started by tests, outside pytest's own temp root.

As root, the embedded Postgres runs as another user, who must be able to traverse every
directory down to its data. pytest resets /tmp/pytest-of-<user> to mode 0700 whenever a session
starts, so a second test session on the machine (another `make test`) would cut a running
test's Postgres off from its files, and the test would fail or not depending on when that
session started. A directory made directly under the system temp dir has no such neighbour.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def embedded_tmp_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="darkroom-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
