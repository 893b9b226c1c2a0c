"""A long-running loop's lifecycle, shared by the worker and the learner: SIGTERM/SIGINT ask
it to finish (a second signal forces the exit, as uvicorn's ``capture_signals``), and
``run(count=, timeout=)`` bounds it, which makes it testable."""

from __future__ import annotations

import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType, TracebackType

__all__ = ["YOUNG_COLLECTION_THRESHOLD", "Bounds", "ExitSignals", "tune_garbage_collector"]

logger = logging.getLogger(__name__)

_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class ExitSignals:
    """``with ExitSignals(on_exit):`` the first SIGTERM/SIGINT sets ``should_exit`` and calls
    ``on_exit``; a second one exits at once (``128 + signal``), without the final commit.

    Once a signal came, the handlers stay installed after the block, through the shutdown
    that follows it, so a second signal still forces the exit there. Outside the main thread
    nothing is installed (Python delivers signals to the main thread only).
    """

    def __init__(self, on_exit: Callable[[], None], what: str = "finishing the batch") -> None:
        self.on_exit = on_exit
        self.what = what
        self.should_exit = False
        self._previous: dict[int, object] = {}

    def __enter__(self) -> ExitSignals:
        if threading.current_thread() is threading.main_thread():
            self._previous = {sig: signal.signal(sig, self._handle) for sig in _SIGNALS}
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self.should_exit:
            return  # shutting down after a signal: a second one still forces the exit
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]

    def _handle(self, signum: int, _frame: FrameType | None) -> None:
        name = signal.Signals(signum).name
        if self.should_exit:
            logger.warning("second %s: forcing exit", name)
            os._exit(128 + signum)
            return  # only reached when os._exit is replaced (tests)
        logger.info("%s: %s and shutting down", name, self.what)
        self.should_exit = True
        self.on_exit()


@dataclass(slots=True)
class Bounds:
    """Stop after ``count`` units of work, ``timeout`` seconds, or once ``until()`` says so,
    whichever comes first.

    >>> bounds = Bounds(count=10)
    >>> bounds.reached(9), bounds.reached(10)
    (False, True)
    >>> Bounds(until=lambda: True).reached(0)
    True
    """

    count: int | None = None
    timeout: float | None = None
    until: Callable[[], bool] | None = None
    started: float = field(default_factory=time.monotonic)

    def reached(self, done: int) -> bool:
        if self.count is not None and done >= self.count:
            return True
        if self.timeout is not None and time.monotonic() - self.started >= self.timeout:
            return True
        return self.until is not None and self.until()


# young containers between two collections; Python's default (700) collects a few times per
# batch, each time walking the batch's live documents and promoting them to be walked again
YOUNG_COLLECTION_THRESHOLD = 20_000


def tune_garbage_collector() -> None:
    """Set the collector up for a loop of micro-batches, once start-up is done.

    What start-up made (modules, torch, the model) lives as long as the process: frozen out
    of the collector's sight, since each full collection would walk all of it (300 ms in a
    worker here, a stall in the middle of a batch). A batch's garbage is freed by reference
    counting; collecting young objects every :data:`YOUNG_COLLECTION_THRESHOLD` allocations
    instead of every 700 cuts the collector's time from ~0.7 to ~0.05 microseconds per input
    message (cycles are still collected, less often).
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
