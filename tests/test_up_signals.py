"""The stop signals of `darkroom up`, sent for real to this process."""

from __future__ import annotations

import os
import signal

import pytest

from service.devenv.signals import Stop, stop_on_signals


def test_sigint_stops_even_when_inherited_ignored_and_is_restored_after() -> None:
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with pytest.raises(Stop) as stopped, stop_on_signals():
            os.kill(os.getpid(), signal.SIGINT)
        assert stopped.value.signum == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


def test_a_signal_while_deferred_stops_at_the_end_of_the_block() -> None:
    reached: list[str] = []

    def start_a_child() -> None:
        with stop_on_signals() as signals:
            with signals.deferred():
                os.kill(os.getpid(), signal.SIGTERM)
                reached.append("end of block")
            reached.append("after the block")

    with pytest.raises(Stop):
        start_a_child()
    assert reached == ["end of block"]


def test_signals_during_the_clean_up_do_not_cut_it_short() -> None:
    cleaned: list[str] = []

    def run_then_clean_up() -> None:
        with stop_on_signals() as signals:
            try:
                os.kill(os.getpid(), signal.SIGTERM)
            finally:
                signals.hold()
                os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C, impatient
                os.kill(os.getpid(), signal.SIGTERM)
                cleaned.append("all of it")

    with pytest.raises(Stop):
        run_then_clean_up()
    assert cleaned == ["all of it"]
