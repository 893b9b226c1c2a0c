"""SIGTERM/SIGINT: the first finishes the batch and shuts down, a second forces the exit."""

from __future__ import annotations

import os
import signal

import pytest

from streamapp.lifecycle import ExitSignals


@pytest.fixture
def handlers_kept() -> object:
    """The test process's own handlers, put back whatever the helper left installed."""
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    yield previous
    for sig, handler in previous.items():
        signal.signal(sig, handler)


def test_the_first_signal_stops_the_loop_and_a_second_forces_exit(
    monkeypatch: pytest.MonkeyPatch, handlers_kept: object
) -> None:
    stopped: list[bool] = []
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    with ExitSignals(lambda: stopped.append(True)) as signals:
        signal.raise_signal(signal.SIGTERM)
        assert (signals.should_exit, stopped, exits) == (True, [True], [])
    signal.raise_signal(signal.SIGINT)  # the loop has returned, close() runs: still forced
    assert exits == [128 + signal.SIGINT]
    assert stopped == [True]


def test_without_a_signal_the_handlers_are_given_back(handlers_kept: object) -> None:
    before = signal.getsignal(signal.SIGTERM)
    with ExitSignals(lambda: None):
        assert signal.getsignal(signal.SIGTERM) is not before
    assert signal.getsignal(signal.SIGTERM) is before
