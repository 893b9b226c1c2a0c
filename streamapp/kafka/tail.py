"""Follow one partition of a rarely written topic without keeping a fetch open.

A caught-up librdkafka consumer sends its next fetch as soon as an empty one returns; a broker
that answers empty fetches at once instead of holding them for ``fetch.wait.max.ms`` (noida-db
does) then serves thousands of them a second. Measured on this project's 2-core machine: one
idle consumer costs 0.37 of a core in the broker and 0.44 in the client's own threads. A
follower of a topic written now and then (the learner's heads, a few a second at most; model
promotions) instead looks at the partition's end every ``interval_s``, in a background thread,
and is assigned only while there is something new to read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

__all__ = ["PartitionTail"]

logger = logging.getLogger(__name__)

_QUERY_TIMEOUT_S = 2.0  # one watermark query; a broker outage only delays the next look
_READ_BUDGET_S = 10.0  # one catch-up read; what is left is read at the next look


class PartitionTail:
    """The records of ``topic[partition]`` from ``start`` on, read in the background.

    ``poll()`` returns what arrived since the last call, in offset order, without blocking.
    A record is there ``interval_s`` / 2 after it was written, on average (plus one fetch).
    ``start`` is ``OFFSET_BEGINNING`` (everything) or ``OFFSET_END`` (only what is written
    after the tail was created).
    """

    def __init__(
        self,
        config: dict[str, Any],
        topic: str,
        partition: int = 0,
        *,
        start: int = OFFSET_BEGINNING,
        interval_s: float = 0.2,
        name: str = "partition-tail",
    ) -> None:
        if start not in (OFFSET_BEGINNING, OFFSET_END):
            raise ValueError("start must be OFFSET_BEGINNING or OFFSET_END")
        self.topic, self.partition = topic, partition
        self.interval_s = interval_s
        self._consumer = Consumer({**config, "enable.partition.eof": True})
        self._start = start
        self._next: int | None = None  # the next offset to read, once resolved
        self._ready: deque[Message] = deque()  # appended by the thread, popped by poll()
        self._stop = threading.Event()
        if start == OFFSET_END:
            # resolve "from now on" now, not at the thread's first look
            self._resolve_or_defer()
        self._thread = threading.Thread(target=self._follow, name=name, daemon=True)
        self._thread.start()

    @property
    def client(self) -> Consumer:
        """The librdkafka consumer the reading thread uses."""
        return self._consumer

    @property
    def reading(self) -> bool:
        """Whether the reading thread still runs (:meth:`close` ends it)."""
        return self._thread.is_alive()

    def poll(self) -> list[Message]:
        """The records read since the last call (possibly none); errors are logged by the
        reading thread, never returned."""
        ready = self._ready
        return [ready.popleft() for _ in range(len(ready))]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=_QUERY_TIMEOUT_S + _READ_BUDGET_S)
        if self._thread.is_alive():  # never close a client another thread is using
            logger.warning("%s[%d] tail still reading: not closed", self.topic, self.partition)
            return
        self._consumer.close()

    # -- the background thread ---------------------------------------------------------------

    def _resolve_or_defer(self) -> None:
        try:
            self._resolve(*self._watermarks())
        except KafkaException as exc:
            logger.info("%s[%d]: end not known yet (%s)", self.topic, self.partition, exc)

    def _resolve(self, low: int, high: int) -> None:
        if self._next is None:
            self._next = high if self._start == OFFSET_END else low

    def _watermarks(self) -> tuple[int, int]:
        tp = TopicPartition(self.topic, self.partition)
        low, high = self._consumer.get_watermark_offsets(tp, timeout=_QUERY_TIMEOUT_S)
        return int(low), int(high)

    def _follow(self) -> None:
        while not self._stop.is_set():
            try:
                self._read_new()
            except KafkaException as exc:  # e.g. the broker is down: look again later
                logger.debug("%s[%d]: %s", self.topic, self.partition, exc)
            except Exception:  # a follower must never die silently
                logger.exception("%s[%d]: reading failed", self.topic, self.partition)
            self._consumer.poll(0)  # unassigned: serves its logs, errors and statistics only
            self._stop.wait(self.interval_s)

    def _read_new(self) -> None:
        """Read from the next offset to the end the partition has now, if it moved."""
        low, high = self._watermarks()
        self._resolve(low, high)  # the first look, when the end was not known at the start
        assert self._next is not None
        if high <= self._next:
            return
        tp = TopicPartition(self.topic, self.partition)
        self._consumer.assign([TopicPartition(self.topic, self.partition, self._next)])
        try:
            deadline = time.monotonic() + _READ_BUDGET_S
            at_end = False
            while not (at_end or self._stop.is_set()) and time.monotonic() < deadline:
                # consume(n, timeout) would wait out its timeout for n records; poll returns
                # with the first
                first = self._consumer.poll(0.2)
                for msg in [first, *self._consumer.consume(63, 0)] if first is not None else []:
                    error = msg.error()
                    if error is None:
                        self._ready.append(msg)
                    elif error.code() == KafkaError._PARTITION_EOF:
                        at_end = True  # past transaction markers and compacted gaps too
                    else:
                        logger.warning("%s[%d]: %s", self.topic, self.partition, error)
            position = self._consumer.position([tp])[0].offset
            if position >= 0:
                self._next = position
        finally:
            self._consumer.unassign()
