"""The micro-batch policy: close a batch at ``max_size`` messages or after ``max_wait_s``. Pure."""

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

    The first poll waits up to ``max_wait_s``; once the batch holds anything it stops at the
    deadline, so at low load latency stays near ``max_wait_s`` and at high load batches fill
    to ``max_size`` without waiting.

    >>> chunks = [[1, 2], [3], [], [4, 5, 6]]
    >>> policy = BatchPolicy(max_size=4, max_wait_s=1.0)
    >>> policy.collect(lambda n, timeout: chunks.pop(0)[:n], clock=lambda: 0.0)
    [1, 2, 3]
    """

    max_size: int
    max_wait_s: float

    def __post_init__(self) -> None:
        if self.max_size < 1:
            raise ValueError("max_size must be at least 1")
        if self.max_wait_s < 0:
            raise ValueError("max_wait_s must be non-negative")

    def collect(
        self,
        poll: Callable[[int, float], list[T]],
        clock: Callable[[], float] = time.monotonic,
    ) -> list[T]:
        """Poll until the batch is full, the deadline passes, or a poll comes back empty."""
        deadline = clock() + self.max_wait_s
        batch: list[T] = []
        while len(batch) < self.max_size:
            got = poll(self.max_size - len(batch), max(0.0, deadline - clock()))
            if not got:
                break
            batch.extend(got)
            if clock() >= deadline:
                break
        return batch
