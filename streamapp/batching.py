"""Adaptive micro-batching: a batch is what has arrived, up to ``max_size``. Pure.

Natural batching (as in LMAX's disruptor or Kafka's producer ``linger.ms``): an idle loop
waits for the first message; once a batch holds one, it takes whatever else is already
there and waits at most ``max_wait_s`` for more. At low load a batch is an event or a few
and latency stays near the fetch time; under load the messages that arrived while the last
batch was processed make the next one larger, up to ``max_size``, which amortizes the
per-batch work (one forward pass, one ``learn_many``, one produce poll).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

__all__ = ["BatchPolicy"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchPolicy:
    """Collects a micro-batch from a ``poll(max_items, timeout_s)`` source.

    Parameters
    ----------
    max_size
        A batch never holds more messages.
    max_wait_s
        How long a batch that holds something may wait for more (0: take what is there).
    idle_wait_s
        How long an empty batch waits for its first message before the loop ticks anyway
        (commits, timers, stop requests).

    >>> chunks = [[1, 2], [3], [], [4, 5, 6]]
    >>> policy = BatchPolicy(max_size=4, max_wait_s=0.0)
    >>> policy.collect(lambda n, timeout: chunks.pop(0)[:n], clock=lambda: 0.0)
    [1, 2, 3]
    """

    max_size: int
    max_wait_s: float = 0.0
    idle_wait_s: float = 0.1

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.max_wait_s < 0 or self.idle_wait_s < 0:
            raise ValueError("waits must be non-negative")

    def collect(
        self,
        poll: Callable[[int, float], list[T]],
        clock: Callable[[], float] = time.monotonic,
    ) -> list[T]:
        """Poll until the batch is full, its wait is over, or a poll comes back empty."""
        batch = poll(self.max_size, self.idle_wait_s)
        if not batch:
            return []
        batch = list(batch)
        deadline = clock() + self.max_wait_s
        while len(batch) < self.max_size:
            got = poll(self.max_size - len(batch), max(0.0, deadline - clock()))
            if not got:
                break
            batch.extend(got)
        return batch
