"""The input consumer: one subscription over ``features`` and ``feedback``, polled in batches."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streamapp.batching import BatchPolicy
from streamapp.codec import Message as Record
from streamapp.errors import (
    BrokerError,
    CommitPostponedError,
    ConsumerFencedError,
    StreamappError,
)
from streamapp.events import position_of
from streamapp.kafka.access import authorization_error
from streamapp.ops.logs import at
from streamapp.ordering import TimestampMerger

__all__ = ["BatchConsumer", "PartitionsCallback", "PolledBatch", "next_offsets", "wait_for_join"]

logger = logging.getLogger(__name__)

PartitionsCallback = Callable[[list[TopicPartition]], None]
# may return the partitions with start offsets to assign instead of the committed ones
AssignCallback = Callable[[list[TopicPartition]], list[TopicPartition] | None]

# a commit refused for these reasons is retried after the rebalance, not fatal
_REBALANCING = {
    KafkaError.REBALANCE_IN_PROGRESS,
    KafkaError.ILLEGAL_GENERATION,
    KafkaError.UNKNOWN_MEMBER_ID,
    KafkaError._STATE,
    KafkaError.STALE_MEMBER_EPOCH,  # KIP-848: a commit from before the member's new epoch
    KafkaError.FENCED_MEMBER_EPOCH,
}
# the coordinator is away (a broker outage or a moved coordinator): postponed, not fatal
_COORDINATOR_AWAY = {
    KafkaError._WAIT_COORD,
    KafkaError._TRANSPORT,
    KafkaError._TIMED_OUT,
    KafkaError._ALL_BROKERS_DOWN,
    KafkaError.COORDINATOR_NOT_AVAILABLE,
    KafkaError.NOT_COORDINATOR,
    KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    KafkaError.REQUEST_TIMED_OUT,
    KafkaError.NETWORK_EXCEPTION,
}


@dataclass(frozen=True, slots=True)
class PolledBatch:
    """One micro-batch of messages, and the next offset to read of each partition it holds
    (what processing it moves the group's committed position to)."""

    messages: list[Record] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    @classmethod
    def of(cls, messages: list[Record]) -> PolledBatch:
        return cls(messages, next_offsets(messages))

    def __len__(self) -> int:
        return len(self.messages)

    def __iter__(self) -> Iterator[Record]:
        return iter(self.messages)


def next_offsets(messages: Iterable[Record]) -> dict[tuple[str, int], int]:
    """Per partition, the offset after the last of ``messages`` (each input counts, a
    dead-lettered one too: it is handled, not skipped).

    >>> class M:
    ...     def __init__(self, p, o): self.p, self.o = p, o
    ...     def topic(self): return "features"
    ...     def partition(self): return self.p
    ...     def offset(self): return self.o
    >>> next_offsets([M(0, 7), M(1, 3), M(0, 5)])
    {('features', 0): 8, ('features', 1): 4}
    """
    offsets: dict[tuple[str, int], int] = {}
    for topic, partition, offset in map(position_of, messages):
        if offsets.get((topic, partition), 0) <= offset:
            offsets[(topic, partition)] = offset + 1
    return offsets


def _cooperative(config: dict[str, Any]) -> bool:
    """Whether rebalances hand out partitions incrementally: KIP-848's consumer protocol, or
    the classic one with the cooperative-sticky assignor.

    >>> _cooperative({"group.protocol": "consumer"}), _cooperative({})
    (True, False)
    """
    protocol = str(config.get("group.protocol", "classic")).lower()
    strategy = str(config.get("partition.assignment.strategy", "")).lower()
    return protocol == "consumer" or "cooperative" in strategy


class BatchConsumer:
    """A ``confluent_kafka.Consumer`` that hands out micro-batches in event-time order and
    reports rebalances.

    Messages of all assigned partitions are merged by timestamp (see
    :mod:`streamapp.ordering`); a partition whose buffer fills up is paused until it drains.
    ``on_revoke`` runs before partitions go (commit what is done there); ``on_lost`` when
    they are already gone (nothing may be committed for them).
    """

    def __init__(
        self,
        config: dict[str, Any],
        topics: Sequence[str],
        *,
        on_assign: AssignCallback | None = None,
        on_revoke: PartitionsCallback | None = None,
        on_lost: PartitionsCallback | None = None,
        max_idle_s: float = 0.5,
        max_buffered: int = 2_000,
        strict_order: bool = False,
    ) -> None:
        # end-of-partition events tell the merger a partition holds nothing back
        self._consumer = Consumer({**config, "enable.partition.eof": True})
        self._cooperative = _cooperative(config)
        self._merger = TimestampMerger(
            {topic: rank for rank, topic in enumerate(topics)},
            max_idle_s=max_idle_s,
            max_buffered=max_buffered,
            strict=strict_order,
        )
        self._paused: set[tuple[str, int]] = set()
        self._next_offset: dict[tuple[str, int], int] = {}  # after the last message fetched
        self._lag: dict[tuple[str, int], int] = {}
        self._lag_due = 0.0
        self._on_assign = on_assign
        self._on_revoke = on_revoke
        self._on_lost = on_lost
        self.assignment: set[tuple[str, int]] = set()
        self._closing = False
        self._joined = False  # the group has answered with a first assignment
        self._consumer.subscribe(
            list(topics), on_assign=self._assigned, on_revoke=self._revoked, on_lost=self._lost
        )

    @property
    def client(self) -> Consumer:
        """The librdkafka consumer underneath."""
        return self._consumer

    @property
    def paused(self) -> frozenset[tuple[str, int]]:
        """The partitions paused because their buffer is full (resumed once it drains)."""
        return frozenset(self._paused)

    def _assigned(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            # an assignment served by close(): positioning the partitions (reading committed
            # offsets) fails on a handle going away, and a callback that does not assign
            # leaves confluent-kafka asking the rebalance protocol, which can hang in close
            # (librdkafka#4041); a terminating consumer takes this assign as an unassign
            logger.info("not taking %s: closing", _describe(partitions))
            try:
                self._take(partitions)
            except KafkaException as exc:
                logger.debug("assign while closing: %s", exc)
            return
        self._joined = True
        self.assignment |= {(tp.topic, tp.partition) for tp in partitions}
        self._merger.assign((tp.topic, tp.partition) for tp in partitions)
        logger.info("assigned %s", _describe(partitions))
        if self._on_assign:
            positioned = self._on_assign(partitions)
            if positioned is not None:
                self._take(positioned)

    def _take(self, partitions: list[TopicPartition]) -> None:
        """Assign in the callback: the whole assignment under an eager protocol, the added
        partitions under a cooperative one (KIP-848's ``group.protocol=consumer``)."""
        if self._cooperative:
            self._consumer.incremental_assign(partitions)
        else:
            self._consumer.assign(partitions)

    def _revoked(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.info("revoking %s", _describe(partitions))
        if self._on_revoke:
            self._on_revoke(partitions)
        self._forget(partitions)

    def _lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        logger.warning("lost %s", _describe(partitions))
        if self._on_lost:
            self._on_lost(partitions)
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        gone = {(tp.topic, tp.partition) for tp in partitions}
        if paused := self._paused & gone:
            # librdkafka keeps the pause across a rebalance that gives the partition back to
            # us, where nothing would resume it: the next owner starts unpaused
            self._consumer.resume([TopicPartition(t, p) for t, p in sorted(paused)])
        self.assignment -= gone
        self._paused -= gone
        for tp in gone:
            self._next_offset.pop(tp, None)
        # buffered but unprocessed: never committed, so the next owner reads them again
        self._merger.revoke(gone)

    def poll_batch(self, policy: BatchPolicy) -> PolledBatch:
        """A micro-batch as ``policy`` collects it, in event-time order, errors filtered, with
        the next offsets to commit once it is processed."""
        return PolledBatch.of(policy.collect(self.consume))

    def consume(self, max_items: int, timeout: float) -> list[Record]:
        """One fetch into the merger (waiting up to ``timeout`` seconds for a first message),
        then up to ``max_items`` of what is safe to release, in timestamp order: what
        :meth:`poll_batch` collects its batch from. Raises on a fatal consumer error."""
        # with messages ready to release, top up without waiting for the fetcher
        wait = 0.0 if self._merger.ready() else timeout
        messages = self._fetch(max_items, wait)
        good = [msg for msg in messages if msg.error() is None]
        at_end = self._errors(messages) if len(good) < len(messages) else set()
        self._next_offset.update(self._merger.add(good))
        for tp in at_end:  # after add(), which clears the mark of a partition it gets messages of
            self._merger.caught_up(tp)
        self._mark_fetched_to_end()
        self._refresh_lag()
        self._apply_backpressure()
        released = self._merger.take(max_items)
        # take() stops where a buffer runs empty; when that partition is fetched to its end it
        # holds nothing earlier back, so release the rest now rather than after another poll
        # (which, with the batch closed, comes only after the batch is processed)
        while len(released) < max_items and self._mark_fetched_to_end():
            more = self._merger.take(max_items - len(released))
            if not more:
                break
            released.extend(more)
        return released

    @staticmethod
    def _errors(messages: list[Message]) -> set[tuple[str, int]]:
        """Log consumer errors (raise on a fatal one); returns the partitions whose end was
        reached and not followed by a message."""
        at_end: set[tuple[str, int]] = set()
        for msg in messages:
            err = msg.error()
            topic, partition, _ = position_of(msg)
            tp = (topic, partition)
            if err is None:
                at_end.discard(tp)
            elif err.code() == KafkaError._PARTITION_EOF:
                at_end.add(tp)
            elif err.fatal() or err.code() == KafkaError._FATAL:
                raise _fatal(err)
            elif (refused := authorization_error(err, f"reading {topic}[{partition}]")) is not None:
                raise refused  # an ACL or a login no retry mends: one line, exit
            else:
                logger.warning(
                    "consumer error on %s[%s]@%s: %s",
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    err,
                    extra=at(msg.topic(), msg.partition(), msg.offset(), error=err.name()),
                )
        return at_end

    def _fetch(self, max_items: int, wait: float) -> list[Message]:
        """What librdkafka has queued, or the first message to arrive within ``wait``.

        ``consume(n, timeout)`` returns early only once it has ``n`` messages, so at low load
        it would hold every message for the whole timeout; ``poll`` returns on the first.
        """
        messages = self._consumer.consume(num_messages=max_items, timeout=0)
        if messages or wait <= 0:
            return messages
        first = self._consumer.poll(wait)
        if first is None:
            return []
        return [first, *self._consumer.consume(num_messages=max_items - 1, timeout=0)]

    def _mark_fetched_to_end(self) -> bool:
        """An empty partition whose last fetch ended at the high watermark holds nothing back;
        True when one was marked.

        Under steady traffic librdkafka reports end-of-partition rarely (each fetch brings
        new records), so waiting for it would hold every batch until the slowest partition's
        next fetch. Like Kafka Streams with ``max.task.idle.ms=0``, wait only for a partition
        the broker said has more than we have fetched.
        """
        if self._merger.strict:
            return False  # the end of a partition is no promise to a strict merger
        marked = False
        for topic, partition in self._merger.waiting_on():
            fetched_to = self._next_offset.get((topic, partition))
            if fetched_to is None:
                continue  # nothing fetched yet: wait for its first fetch or its end
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high >= 0 and fetched_to >= high:
                self._merger.caught_up((topic, partition))
                marked = True
        return marked

    def _apply_backpressure(self) -> None:
        full = set(self._merger.full())
        drained = {tp for tp in self._paused if tp not in full}
        if full - self._paused:
            self._consumer.pause([TopicPartition(t, p) for t, p in full - self._paused])
        if drained:
            self._consumer.resume([TopicPartition(t, p) for t, p in drained])
        self._paused = (self._paused | full) - drained

    def commit(self, offsets: list[TopicPartition]) -> bool:
        """Synchronously commit ``offsets`` (next offsets to read).

        Returns False when the group is rebalancing (the offsets stay the caller's to commit
        on revoke or later); raises :class:`CommitPostponedError` when the coordinator cannot
        be reached (the caller's outage clock decides how long that may last), and
        ``KafkaException`` on any other failure.
        """
        try:
            self._consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in _COORDINATOR_AWAY or (
                error.retriable() and error.code() not in _REBALANCING
            ):
                raise CommitPostponedError(f"commit postponed: {error.str()}") from exc
            if error.code() not in _REBALANCING:
                raise
            logger.info("commit deferred: %s", error.str())
            return False
        return True

    def committed(
        self, partitions: Iterable[tuple[str, int]], timeout: float = 10.0
    ) -> dict[tuple[str, int], int]:
        """The group's committed offset of each of ``partitions`` that has one."""
        asked = [TopicPartition(topic, partition) for topic, partition in partitions]
        return {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.committed(asked, timeout=timeout)
            if tp.offset >= 0
        }

    def reachable(self, timeout: float) -> bool:
        """Whether a broker answers a metadata request within ``timeout`` seconds."""
        try:
            self._consumer.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages between what was fetched and the high watermark, per assigned partition,
        as of the last refresh (at most a second old). Safe to read from another thread."""
        return dict(self._lag)

    def _refresh_lag(self) -> None:
        # on the polling thread: a watermark call from the HTTP thread can wait on librdkafka
        now = time.monotonic()
        if now < self._lag_due:
            return
        self._lag_due = now + 1.0
        assigned = [TopicPartition(t, p) for t, p in self.assignment]
        positions = {
            (tp.topic, tp.partition): tp.offset for tp in self._consumer.position(assigned)
        }
        lag = {}
        for tp in assigned:
            key = (tp.topic, tp.partition)
            at = self._next_offset.get(key, positions.get(key, -1))
            _, high = self._consumer.get_watermark_offsets(tp, cached=True)
            if at >= 0 and high >= 0:
                lag[key] = max(high - at, 0)
        self._lag = lag

    def group_metadata(self) -> Any:
        return self._consumer.consumer_group_metadata()

    def unread(self, messages: Iterable[Record]) -> None:
        """Hand ``messages`` (a batch from :meth:`poll_batch`) out again first, in the next
        batch: the position is held without a seek or a refetch."""
        self._merger.unread(messages)

    def rewind(self, positions: dict[tuple[str, int], int]) -> None:
        """Drop everything buffered and continue each partition from ``positions``."""
        self._merger.revoke(list(self.assignment))
        self._merger.assign(self.assignment)
        self._next_offset.clear()
        for (topic, partition), offset in positions.items():
            if (topic, partition) in self.assignment:
                self._consumer.seek(TopicPartition(topic, partition, offset))

    def close(self, join_timeout_s: float = 10.0) -> None:
        """Close once the group has answered the first join (see :func:`wait_for_join`)."""
        wait_for_join(self._consumer, lambda: self._joined, join_timeout_s)
        self._closing = True
        self._consumer.close()


def wait_for_join(consumer: Consumer, joined: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """Before closing a subscribed consumer: poll until the group has served its first
    assignment.

    A consumer closed while its first assignment is on the way gets that assignment served
    from inside ``close()``, where the group handle no longer answers, and the callback's
    ``assign`` hangs for good (librdkafka#4041; 10 of 40 workers closed 0-400 ms after
    start never exited). So it polls until ``joined()`` (an empty assignment counts); what
    those polls fetch is not processed, hence never committed. ``unsubscribe`` first would
    cost a static member its place in the group (KIP-345: a restart would rebalance).
    """
    deadline = time.monotonic() + timeout_s
    try:
        while not joined() and time.monotonic() < deadline:
            consumer.poll(0.05)
    except KafkaException as exc:  # e.g. a consumer fenced for good
        logger.debug("waiting for the group before close: %s", exc)


def _fatal(err: KafkaError) -> StreamappError:
    """The worker's exception for a fatal consumer error. librdkafka's one fatal consumer
    error is a static member fenced by a newer one with its ``group.instance.id``: another
    instance of this worker took over, so this one stops as a fenced producer does."""
    if "fenced" in err.str().lower():
        return ConsumerFencedError(f"consumer fenced by a newer instance: {err.str()}")
    return BrokerError(f"fatal consumer error: {err}")


def _describe(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{tp.topic}[{tp.partition}]" for tp in partitions) or "nothing"
