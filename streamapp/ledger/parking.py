"""Early labels: labels that beat their event, parked until it is scored.

A parked label waits at most ``ttl_s`` of stream time, and at most ``max_parked`` labels
wait (beyond, the oldest is dropped); a label dropped either way becomes an orphan, which the
caller counts from what :meth:`EarlyLabels.park` and :meth:`EarlyLabels.expire` return.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from streamapp.events import Feedback

__all__ = ["EarlyLabels"]


class EarlyLabels:
    """Parked labels by event id, oldest first.

    >>> early = EarlyLabels(ttl_s=10.0, max_parked=2)
    >>> [early.park(Feedback(event_id, 1, 5.0)) for event_id in "abc"]
    [0, 0, 1]
    >>> [fb.event_id for fb in early.claim(["c", "x"])], len(early)
    (['c'], 1)
    >>> early.expire(clock=20.0), len(early)
    (1, 0)
    """

    def __init__(self, ttl_s: float, max_parked: int) -> None:
        self.ttl_s = ttl_s
        self.max_parked = max_parked
        self.labels: OrderedDict[str, Feedback] = OrderedDict()

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def enabled(self) -> bool:
        """Whether a label may be parked at all (else a label without an event is an orphan)."""
        return self.ttl_s > 0 and self.max_parked > 0

    def park(self, fb: Feedback) -> int:
        """Park ``fb``; returns how many labels that made orphans (the oldest, over the bound)."""
        self.labels[fb.event_id] = fb
        if len(self.labels) > self.max_parked:  # a count bound, whatever the stream time says
            self.labels.popitem(last=False)
            return 1
        return 0

    def claim(self, ids: Sequence[str]) -> list[Feedback]:
        """Take the parked labels of ``ids`` (events scored now), in the order of ``ids``."""
        labels = self.labels
        if not labels:
            return []
        return [labels.pop(event_id) for event_id in ids if event_id in labels]

    def expire(self, clock: float) -> int:
        """Drop labels older than ``ttl_s`` at stream time ``clock``; returns how many."""
        labels = self.labels
        horizon = clock - self.ttl_s
        dropped = 0
        while labels:
            event_id, fb = next(iter(labels.items()))
            if fb.ts >= horizon:
                break
            del labels[event_id]
            dropped += 1
        return dropped
