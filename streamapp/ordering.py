"""Event-time alignment of input partitions. Pure: no Kafka here.

A consumer reads partitions in whatever order the fetcher returns them. After downtime (a
backlog) that can mean all features first and all feedback later, so events would be
scored before any label is learned: not what happened, and not reproducible. Like Kafka
Streams, the worker releases buffered messages in timestamp order across its partitions,
waiting for a partition with nothing buffered until it is known to be caught up (end of
partition reached) or has been quiet for ``max_idle_s``. A *strict* merger does not take the
end of a partition as a promise: a partition whose leader just died looks caught up, and the
producer's retries land on its new leader seconds later with earlier timestamps than what
the others delivered meanwhile. Strict, only a later record or ``max_idle_s`` of quiet
releases the others, so the order is the event-time order across a failover too.
"""

from __future__ import annotations

import heapq
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable

from streamapp.codec import Message
from streamapp.events import position_of

__all__ = ["TimestampMerger"]

logger = logging.getLogger(__name__)

Partition = tuple[str, int]


class TimestampMerger:
    """Per-partition buffers, released in (timestamp, topic rank, partition, offset) order.

    Parameters
    ----------
    topic_rank
        Tie-breaker between topics, e.g. ``{"features": 0, "feedback": 1}`` so an event is
        processed before a label with the same timestamp.
    max_idle_s
        How long an empty, not-caught-up partition may hold back the others.
    max_buffered
        Per-partition buffer size above which :meth:`full` reports it (to pause fetching).
    strict
        The end of a partition does not release the others: only a record or ``max_idle_s``.

    >>> class M:
    ...     def __init__(self, topic, ts, offset): self.t, self.ts, self.o = topic, ts, offset
    ...     def topic(self): return self.t
    ...     def partition(self): return 0
    ...     def offset(self): return self.o
    ...     def timestamp(self): return (1, self.ts)
    >>> merger = TimestampMerger({"features": 0, "feedback": 1}, max_idle_s=1.0)
    >>> merger.assign([("features", 0), ("feedback", 0)])
    >>> merger.add([M("features", 10, 0), M("features", 30, 1)])  # the next offsets
    {('features', 0): 2}
    >>> merger.take(10)  # feedback[0] may still hold earlier records: wait
    []
    >>> _ = merger.add([M("feedback", 20, 0)]); merger.caught_up(("feedback", 0))
    >>> [(m.topic(), m.ts) for m in merger.take(10)]
    [('features', 10), ('feedback', 20), ('features', 30)]

    Strict, a partition at its end still holds the others back until it has been quiet for
    ``max_idle_s`` (here a clock that does not move):

    >>> strict = TimestampMerger(max_idle_s=1.0, strict=True, clock=lambda: 0.0)
    >>> strict.assign([("features", 0), ("features", 1)])
    >>> _ = strict.add([M("features", 10, 0)]); strict.caught_up(("features", 1))
    >>> strict.take(10)
    []
    """

    def __init__(
        self,
        topic_rank: dict[str, int] | None = None,
        *,
        max_idle_s: float = 0.5,
        max_buffered: int = 10_000,
        strict: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.topic_rank = dict(topic_rank or {})
        self.max_idle_s = max_idle_s
        self.max_buffered = max_buffered
        self.strict = strict
        self._clock = clock
        self._buffers: dict[Partition, deque[Message]] = {}
        self._caught_up: set[Partition] = set()
        self._empty_since: dict[Partition, float] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self._buffers.values())

    def assign(self, partitions: Iterable[Partition]) -> None:
        now = self._clock()
        for tp in partitions:
            self._buffers.setdefault(tp, deque())
            self._empty_since.setdefault(tp, now)

    def revoke(self, partitions: Iterable[Partition]) -> list[Message]:
        """Forget partitions; returns what was buffered for them (never processed)."""
        dropped: list[Message] = []
        for tp in partitions:
            dropped.extend(self._buffers.pop(tp, ()))
            self._caught_up.discard(tp)
            self._empty_since.pop(tp, None)
        return dropped

    def add(self, messages: Iterable[Message]) -> dict[Partition, int]:
        """Buffer ``messages``; returns the next offset of each partition they came from (a
        partition's messages come in offset order)."""
        buffers = self._buffers
        next_offsets: dict[Partition, int] = {}
        for msg in messages:
            topic, partition, offset = position_of(msg)
            tp = (topic, partition)
            buffer = buffers.get(tp)
            if buffer is None:
                buffer = buffers[tp] = deque()
            buffer.append(msg)
            next_offsets[tp] = offset + 1
        self._caught_up -= next_offsets.keys()
        return next_offsets

    def unread(self, messages: Iterable[Message]) -> None:
        """Put messages :meth:`take` released back in front of their buffers, as if never
        taken (a batch that could not be processed yet: a schema registry away). Messages of
        a partition no longer assigned are dropped: its next owner reads them."""
        by_partition: dict[Partition, list[Message]] = {}
        for msg in messages:
            topic, partition, _ = position_of(msg)
            by_partition.setdefault((topic, partition), []).append(msg)
        for tp, msgs in by_partition.items():
            buffer = self._buffers.get(tp)
            if buffer is not None:
                buffer.extendleft(reversed(sorted(msgs, key=lambda m: m.offset() or 0)))

    def caught_up(self, tp: Partition) -> None:
        """The consumer reached the end of ``tp``: it holds nothing back any more (unless
        strict)."""
        if not self.strict:
            self._caught_up.add(tp)

    def waiting_on(self) -> list[Partition]:
        """Empty partitions that are not known to be caught up: they hold the others back."""
        return [tp for tp, b in self._buffers.items() if not b and tp not in self._caught_up]

    def full(self) -> list[Partition]:
        """Partitions whose buffer is over ``max_buffered``."""
        return [tp for tp, buffer in self._buffers.items() if len(buffer) > self.max_buffered]

    def _key(self, msg: Message) -> tuple[int, int, int, int]:
        # a buffered message was fetched: it has a topic, a partition and an offset
        rank = self.topic_rank.get(msg.topic(), 99)  # type: ignore[arg-type]
        return (msg.timestamp()[1], rank, msg.partition(), msg.offset())  # type: ignore[return-value]

    def take(self, max_items: int) -> list[Message]:
        """Up to ``max_items`` messages that are safe to process, in timestamp order."""
        now = self._clock()
        for tp, buffer in self._buffers.items():
            if buffer:
                self._empty_since.pop(tp, None)
            else:
                self._empty_since.setdefault(tp, now)
        heads = [(self._key(b[0]), tp) for tp, b in self._buffers.items() if b]
        heapq.heapify(heads)
        out: list[Message] = []
        # only a buffer running empty can block the merge: check then, not per message
        blocked = bool(heads) and self._blocked(now)
        while heads and len(out) < max_items and not blocked:
            _, tp = heapq.heappop(heads)
            buffer = self._buffers[tp]
            out.append(buffer.popleft())
            if buffer:
                heapq.heappush(heads, (self._key(buffer[0]), tp))
            else:
                self._empty_since[tp] = now
                blocked = self._blocked(now)
        return out

    def ready(self) -> bool:
        """True when :meth:`take` would release something now (so fetching need not wait)."""
        return any(self._buffers.values()) and not self._blocked(self._clock(), count=False)

    def _blocked(self, now: float, count: bool = True) -> bool:
        """True while an empty partition might still deliver something earlier."""
        idle = False
        for tp, buffer in self._buffers.items():
            if buffer or tp in self._caught_up:
                continue
            if now - self._empty_since.get(tp, now) < self.max_idle_s:
                return True
            idle = True
        if idle and count:
            logger.debug("releasing without a quiet partition (event-time order not guaranteed)")
        return False
