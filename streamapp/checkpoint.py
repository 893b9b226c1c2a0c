"""Offsets are committed in one place, in numbered steps, only for delivered outputs.

1. ``store`` records the next offsets of a processed batch (nothing is committed yet).
2. ``commit`` flushes the producer: every output of those batches is acknowledged
   (a delivery error raises here, and the offsets stay uncommitted).
3. It then commits the stored offsets synchronously and forgets them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from typing import Protocol

from confluent_kafka import TopicPartition

__all__ = ["Checkpoint"]

logger = logging.getLogger(__name__)


class _Committer(Protocol):
    def commit(self, offsets: list[TopicPartition]) -> bool: ...


class _Flusher(Protocol):
    def flush(self, timeout: float = ...) -> None: ...


class Checkpoint:
    """At-least-once offset management for one consumer and its output producer.

    >>> class Fake:
    ...     def __init__(self): self.log = []
    ...     def flush(self, timeout=30.0): self.log.append("flush")
    ...     def commit(self, offsets):
    ...         self.log.append([(o.topic, o.partition, o.offset) for o in offsets])
    ...         return True
    >>> fake = Fake()
    >>> checkpoint = Checkpoint(fake, fake, interval_s=0)
    >>> checkpoint.store({("features", 0): 10}); checkpoint.store({("features", 0): 12})
    >>> checkpoint.commit_if_due(); fake.log
    ['flush', [('features', 0, 12)]]
    """

    def __init__(
        self,
        consumer: _Committer,
        producer: _Flusher,
        interval_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._consumer = consumer
        self._producer = producer
        self.interval_s = interval_s
        self._clock = clock
        self._pending: dict[tuple[str, int], int] = {}
        self._last_commit = clock()
        self.commits = 0

    @property
    def pending(self) -> dict[tuple[str, int], int]:
        return dict(self._pending)

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        """Step 1: remember the next offset of each partition of a processed batch."""
        for tp, offset in offsets.items():
            if offset > self._pending.get(tp, -1):
                self._pending[tp] = offset

    def commit_if_due(self) -> None:
        if self._pending and self._clock() - self._last_commit >= self.interval_s:
            self.commit()

    def commit(self, only: Iterable[tuple[str, int]] | None = None) -> None:
        """Steps 2 and 3: flush outputs, then commit the stored offsets (of ``only``, if given)."""
        selected = (
            self._pending
            if only is None
            else {tp: self._pending[tp] for tp in only if tp in self._pending}
        )
        if not selected:
            return
        self._producer.flush()
        offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(selected.items())]
        if not self._consumer.commit(offsets):
            return  # the group is rebalancing: still pending, committed on revoke or next time
        for tp in list(selected):
            del self._pending[tp]
        self._last_commit = self._clock()
        self.commits += 1
        logger.debug("committed %s", selected)

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        """Drop stored offsets of partitions that were lost (they must not be committed)."""
        for tp in partitions:
            self._pending.pop(tp, None)
