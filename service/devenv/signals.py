"""Stop signals for `darkroom up`: SIGINT, SIGTERM and SIGHUP all mean "stop everything".

Handled explicitly, because what `up` inherits cannot be trusted: started in the background, by
nohup or by a CI runner, SIGINT arrives ignored, and Python's default SIGTERM ends the process
without unwinding, leaving the embedded servers behind.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class Stop(BaseException):  # like KeyboardInterrupt: no `except Exception` may swallow it
    """Raised in the main thread by the first stop signal; unwinding does the stopping."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StopSignals:
    def __init__(self) -> None:
        self.received: int | None = None
        self._holding = False
        self._deferring = False

    def hold(self) -> None:
        """From now on signals are only noted: the clean-up that follows must not be cut short
        (a second Ctrl-C would otherwise leak a server)."""
        self._holding = True

    @contextmanager
    def deferred(self) -> Iterator[None]:
        """A signal during the block raises only at its end: a child started inside is
        recorded before the stop begins, so the stop knows to end it."""
        self._deferring = True
        try:
            yield
        finally:
            self._deferring = False
        if self.received is not None and not self._holding:
            self._holding = True
            raise Stop(self.received)

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        if self.received is None:
            self.received = signum
            if not self._holding and not self._deferring:
                self._holding = True
                raise Stop(signum)


@contextmanager
def stop_on_signals() -> Iterator[StopSignals]:
    """Within the block, the first stop signal raises Stop, whatever handler (or SIG_IGN) the
    process inherited; the inherited handlers come back at the end."""
    signals = StopSignals()
    previous = {signum: signal.signal(signum, signals._handle) for signum in STOP_SIGNALS}
    try:
        yield signals
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
