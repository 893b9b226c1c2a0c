"""How long the broker has been away, how often outputs were lost, and when to give up.

A commit that cannot reach the group coordinator, or outputs that are not acknowledged in
time, start the clock; the next successful commit stops it. The worker rides through an
outage shorter than the limit (it keeps its inputs pending and retries), and past it exits
with one line, so a supervisor restarts it or pages someone instead of a silent stall.

>>> now = [0.0]
>>> outage = OutageClock(limit_s=60, clock=lambda: now[0])
>>> outage.failed("commit postponed"); now[0] = 59.0; outage.failed("commit postponed")
>>> outage.down_s
59.0
>>> outage.succeeded(); outage.down_s
0.0
>>> outage.failed("x"); now[0] = 130.0; outage.failed("x")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
streamapp.errors.BrokerError: the broker has been unreachable for 71 s (delivery.broker_...=60): x
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable

from streamapp.errors import BrokerError

__all__ = ["FailureWindow", "OutageClock"]

logger = logging.getLogger(__name__)


class OutageClock:
    """Since when commits have failed for want of a broker; past ``limit_s``, give up."""

    def __init__(self, limit_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit_s = limit_s
        self._clock = clock
        self._since: float | None = None
        self.outages = 0  # how many began, for the metrics

    @property
    def down_s(self) -> float:
        return 0.0 if self._since is None else self._clock() - self._since

    def failed(self, why: str) -> None:
        """A commit or a delivery failed because the broker is away: one line when an outage
        begins; :class:`~streamapp.errors.BrokerError` once it lasted past the limit."""
        now = self._clock()
        if self._since is None:
            self._since = now
            self.outages += 1
            logger.warning("broker unreachable (%s): holding offsets, retrying", why)
            return
        if now - self._since > self.limit_s:
            raise BrokerError(
                f"the broker has been unreachable for {now - self._since:.0f} s "
                f"(delivery.broker_outage_limit_s={self.limit_s:g}): {why}"
            )

    def succeeded(self) -> None:
        """A commit went through: the outage, if any, is over."""
        if self._since is not None:
            logger.warning("broker reachable again after %.1f s", self._clock() - self._since)
            self._since = None


class FailureWindow:
    """Outputs lost (and re-read) within a sliding window: more than ``limit`` in
    ``window_s`` seconds is no transient fault, so the worker gives up (exits) instead.

    >>> now = [0.0]
    >>> window = FailureWindow(limit=2, window_s=60.0, clock=lambda: now[0])
    >>> window.failed(), window.failed()
    (False, False)
    >>> now[0] = 61.0; window.failed()  # the first two left the window
    False
    >>> window.failed(), window.failed()
    (False, True)
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._times: deque[float] = deque()

    def failed(self) -> bool:
        """Count a failure now; True when there were more than ``limit`` in the window."""
        now = self._clock()
        self._times.append(now)
        while self._times and now - self._times[0] > self.window_s:
            self._times.popleft()
        return len(self._times) > self.limit

    def __len__(self) -> int:
        return len(self._times)
