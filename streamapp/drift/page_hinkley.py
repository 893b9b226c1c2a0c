"""The Page-Hinkley test on a stream of values, a batch at a time.

The same test and the same arithmetic as river's ``drift.PageHinkley`` (two-sided, a
running mean, a fading cumulative deviation): every value goes through the same float
operations in the same order, so the change points are river's exactly (a test holds the
two to it). What differs is the cost: one call per batch with the state in local variables,
instead of a method call, an attribute write and a property read per label, which is most
of what the error detectors cost per label.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable

__all__ = ["PageHinkley"]

logger = logging.getLogger(__name__)


class PageHinkley:
    """Two-sided Page-Hinkley: a change when the fading sum of deviations from the running
    mean moves more than ``threshold`` from its extreme, after ``min_instances`` values; the
    test restarts after each change.

    >>> ph = PageHinkley()
    >>> ph.update_many([0.0] * 1000 + [1.0] * 200)
    [1052]
    >>> ph.update_many([1.0] * 10)  # restarted after the change: no evidence yet
    []
    """

    def __init__(
        self,
        min_instances: int = 30,
        delta: float = 0.005,
        threshold: float = 50.0,
        alpha: float = 1 - 0.0001,
    ) -> None:
        self.min_instances = min_instances
        self.delta = delta
        self.threshold = threshold
        self.alpha = alpha
        self._restart()

    def _restart(self) -> None:
        self._n = 0.0
        self._mean = 0.0
        self._sum_increase = 0.0
        self._sum_decrease = 0.0
        self._min_increase = math.inf
        self._max_decrease = -1.0

    def update_many(self, values: Iterable[float]) -> list[int]:
        """Feed ``values`` in order; the 1-based positions among them at which a change was
        detected (the test restarts with the value after each)."""
        n, mean = self._n, self._mean
        up, down, low, high = (
            self._sum_increase,
            self._sum_decrease,
            self._min_increase,
            self._max_decrease,
        )
        alpha, delta, threshold, warmup = self.alpha, self.delta, self.threshold, self.min_instances
        changes: list[int] = []
        for i, x in enumerate(values, 1):
            n += 1.0
            mean += (1.0 / n) * (x - mean)  # river's stats.Mean, operation for operation
            dev = x - mean
            up = alpha * up + dev - delta
            down = alpha * down + dev + delta
            if up < low:
                low = up
            if down > high:
                high = down
            if n >= warmup and (up - low > threshold or high - down > threshold):
                changes.append(i)
                n, mean, up, down, low, high = 0.0, 0.0, 0.0, 0.0, math.inf, -1.0
        self._n, self._mean = n, mean
        self._sum_increase, self._sum_decrease = up, down
        self._min_increase, self._max_decrease = low, high
        return changes
