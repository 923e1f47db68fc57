"""Output that never stops a shutdown half-way.

`darkroom up` often runs with its stdout on a pipe that is gone by the time it stops (a CI step
that finished reading, `| head`, a closed terminal). A write there raises BrokenPipeError; if
that happened while stopping, the embedded servers were left running. Here a failed write
silences the stream for good instead.
"""

from __future__ import annotations

import os
import sys
from typing import TextIO


def say(message: str, *, err: bool = False) -> None:
    stream = sys.stderr if err else sys.stdout
    try:
        stream.write(f"{message}\n")
        stream.flush()
    except (OSError, ValueError):  # a broken pipe, or a stream already closed
        _silence(stream)


def _silence(stream: TextIO) -> None:
    """Point the stream's descriptor at /dev/null: later writes, the interpreter's last flush
    and the children we start next all succeed quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        return
    try:
        os.dup2(devnull, stream.fileno())
    except (OSError, ValueError):
        pass
    finally:
        os.close(devnull)
