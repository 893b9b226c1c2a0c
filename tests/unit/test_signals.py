"""SIGTERM/SIGINT: the first finishes the batch and shuts down, a second forces the exit."""

from __future__ import annotations

import os
import signal

import pytest

from streamapp.worker import Worker


def test_the_first_signal_stops_the_loop_and_a_second_forces_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    worker = Worker.__new__(Worker)  # the handlers need no broker and no model
    worker._running, worker._stopping = True, False
    exits: list[int] = []
    monkeypatch.setattr(os, "_exit", exits.append)
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        restore = worker._install_signal_handlers()
        signal.raise_signal(signal.SIGTERM)
        assert (worker._running, exits) == (False, [])
        restore()  # the loop has returned; close() runs next
        signal.raise_signal(signal.SIGINT)  # still shutting down: forced
        assert exits == [128 + signal.SIGINT]
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def test_without_a_signal_the_handlers_are_given_back() -> None:
    worker = Worker.__new__(Worker)
    worker._running, worker._stopping = True, False
    before = signal.getsignal(signal.SIGTERM)
    worker._install_signal_handlers()()
    assert signal.getsignal(signal.SIGTERM) is before
