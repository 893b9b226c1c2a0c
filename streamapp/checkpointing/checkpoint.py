"""Offsets are committed in one place, in numbered steps, only for delivered outputs.

1. ``store`` records the next offsets of a processed batch (nothing is committed yet).
2. ``commit`` flushes the producer: every output of those batches is acknowledged
   (a delivery error raises here, and the offsets stay uncommitted).
3. It then commits the stored offsets synchronously and forgets them.

A commit that falls due while outputs are still on their way waits for a later turn of the
loop rather than blocking it in a flush (at most ``DEFER_INTERVALS`` intervals, then it
flushes).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from confluent_kafka import TopicPartition

from streamapp.errors import (
    BrokerError,
    FencedError,
    ProducerFatalError,
    StreamappError,
    TransactionError,
)

__all__ = ["OffsetCheckpoint", "TransactionalCheckpoint"]

logger = logging.getLogger(__name__)

# a commit that times out is still under way and is called again (any other transactional
# call would conflict with it); bounded: after half a minute only a new producer, whose
# init_transactions settles the transaction on the broker, can go on
COMMIT_ATTEMPTS = 3
COMMIT_TIMEOUT_S = 10.0


class _Committer(Protocol):
    def commit(self, offsets: list[TopicPartition]) -> bool: ...


# how many commit intervals a due commit may wait for the outputs it covers to be
# acknowledged by themselves before it flushes the producer (which blocks the loop)
DEFER_INTERVALS = 3


class _Flusher(Protocol):
    def flush(self, timeout: float = ...) -> None: ...
    def in_flight(self) -> int: ...


class OffsetCheckpoint:
    """At-least-once offset management for one consumer and its output producer.

    >>> class Fake:
    ...     def __init__(self): self.log = []
    ...     def flush(self, timeout=30.0): self.log.append("flush")
    ...     def in_flight(self): return 0
    ...     def commit(self, offsets):
    ...         self.log.append([(o.topic, o.partition, o.offset) for o in offsets])
    ...         return True
    >>> fake = Fake()
    >>> checkpoint = OffsetCheckpoint(fake, fake, interval_s=0)
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
        self.commit_seconds = 0.0  # the loop's time blocked in flush + commit

    @property
    def pending(self) -> dict[tuple[str, int], int]:
        return dict(self._pending)

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        """Step 1: remember the next offset of each partition of a processed batch."""
        for tp, offset in offsets.items():
            if offset > self._pending.get(tp, -1):
                self._pending[tp] = offset

    def use_consumer(self, consumer: _Committer) -> None:
        """Commit through ``consumer`` from now on (the last one was replaced)."""
        self._consumer = consumer

    def use_producer(self, producer: _Flusher) -> None:
        """Flush ``producer`` from now on (the last one failed; its stored offsets were
        forgotten by the rewind that follows)."""
        self._producer = producer

    def commit_if_due(self) -> None:
        """Commit when an interval has passed and the outputs are acknowledged, or when
        ``DEFER_INTERVALS`` have passed (flushing them)."""
        if not self._pending:
            return
        waited = self._clock() - self._last_commit
        if waited < self.interval_s:
            return
        if waited < DEFER_INTERVALS * self.interval_s and self._producer.in_flight():
            return  # outputs still on their way: a later turn, rather than a flush now
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
        began = time.perf_counter()
        try:
            self._producer.flush()
            offsets = [TopicPartition(t, p, o) for (t, p), o in sorted(selected.items())]
            committed = self._consumer.commit(offsets)
        finally:
            self.commit_seconds += time.perf_counter() - began
        if not committed:
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


class _TransactionalProducer(Protocol):
    def begin_transaction(self) -> None: ...
    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = ...
    ) -> None: ...
    def commit_transaction(self, timeout: float = ...) -> None: ...
    def abort_transaction(self, timeout: float = ...) -> None: ...


class _GroupMember(Protocol):
    def group_metadata(self) -> Any: ...


class _SnapshotWriter(Protocol):
    def write(
        self, producer: Any, seq: int, blob: bytes, offsets: dict[tuple[str, int], int]
    ) -> None: ...
    def write_cursor(self, producer: Any, cursor: bytes) -> None: ...


class TransactionalCheckpoint:
    """Exactly-once: outputs, input offsets of both topics and (when due) a learning-state
    snapshot are committed in one Kafka transaction.

    1. ``store`` records the next offsets of a processed batch; its outputs are already in
       the open transaction.
    2. ``commit`` writes a snapshot when ``snapshot_interval_s`` has passed (or when asked),
       adds the offsets above the group's committed ones with
       ``send_offsets_to_transaction``, and commits. A ``cursor`` (small bytes saying what
       the outputs had reached) is written to the store whenever it changed since the last
       commit, so the one a restore reads is the last committed transaction's.
    3. On failure the transaction is aborted and :class:`TransactionError` raised: the
       caller restores the last snapshot and replays (nothing of the aborted transaction is
       visible to ``read_committed`` readers). A fenced or dead producer is not aborted
       (it cannot be): :class:`FencedError` or :class:`ProducerFatalError` goes up as is.

    A ``fault_hook`` is called just before the commit (tests inject failures there).
    """

    def __init__(
        self,
        consumer: _GroupMember,
        producer: _TransactionalProducer,
        store: _SnapshotWriter,
        snapshot: Callable[[], bytes],
        *,
        interval_s: float = 1.0,
        snapshot_interval_s: float = 30.0,
        first_seq: int = 0,
        cursor: Callable[[], bytes] | None = None,
        fault_hook: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        snapshot_partitions: Iterable[tuple[str, int]] = (),
    ) -> None:
        self._consumer = consumer
        self._cursor = cursor
        self._cursor_committed: bytes | None = None  # unknown at first: written once
        self._producer = producer
        self._store = store
        self._snapshot = snapshot
        self.interval_s = interval_s
        self.snapshot_interval_s = snapshot_interval_s
        self.seq = first_seq
        self._fault_hook = fault_hook
        self._clock = clock
        self.processed: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self._dirty = False
        self._last_commit = self._last_snapshot = clock()
        # every committed partition must be covered by a snapshot, or a restore could not
        # rebuild the state that its committed offset stands for
        self.snapshot_partitions: set[tuple[str, int]] = set(snapshot_partitions)
        self._snapshot_current = False  # the last commit wrote a snapshot of the current state
        self.commits = 0
        self.aborts = 0
        self.commit_seconds = 0.0  # the loop's time blocked in commits, snapshots included
        self._producer.begin_transaction()

    @property
    def pending(self) -> dict[tuple[str, int], int]:
        return {tp: o for tp, o in self.processed.items() if o > self.committed.get(tp, -1)}

    def reset(
        self,
        processed: dict[tuple[str, int], int],
        committed: dict[tuple[str, int], int],
        snapshot_partitions: set[tuple[str, int]],
    ) -> None:
        """Positions after a restore: the snapshot's offsets and the group's commits."""
        self.processed = dict(processed)
        self.committed = dict(committed)
        self.snapshot_partitions = set(snapshot_partitions)
        self._dirty = False

    def restored(self, seq: int) -> None:
        """A restore read snapshot ``seq``: the next snapshot is numbered after it (and after
        any this checkpoint wrote)."""
        self.seq = max(self.seq, seq)

    def assigned(
        self, starts: dict[tuple[str, int], int], committed: dict[tuple[str, int], int]
    ) -> None:
        """Partitions were assigned: the group's commits, and where processing resumes (for a
        partition with no position yet)."""
        self.committed.update(committed)
        for tp, offset in starts.items():
            self.processed.setdefault(tp, offset)

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        """Step 1: the next offsets of a processed batch, whose outputs are in the open
        transaction."""
        for tp, offset in offsets.items():
            if offset > self.processed.get(tp, -1):
                self.processed[tp] = offset
        self.outputs_written()

    def outputs_written(self) -> None:
        """Outputs went into the open transaction (with a batch's offsets or, like the last
        drift report, without any): the next commit is due for them."""
        self._dirty = True
        self._snapshot_current = False

    def use_consumer(self, consumer: _GroupMember) -> None:
        """Send offsets with ``consumer``'s group metadata from now on (it was replaced)."""
        self._consumer = consumer

    def use_producer(self, producer: _TransactionalProducer) -> None:
        """Write through ``producer`` from now on (initialized; the last one failed, so its
        open transaction is void): opens its first transaction."""
        self._producer = producer
        self._dirty = False
        self._producer.begin_transaction()

    def commit_if_due(self) -> None:
        now = self._clock()
        if self._dirty and now - self._last_commit >= self.interval_s:
            self.commit(snapshot=now - self._last_snapshot >= self.snapshot_interval_s)

    def commit(self, snapshot: bool = False) -> None:
        """Commit the open transaction (it always covers every partition), with a snapshot of
        the learning state when asked or when a committed partition has none yet."""
        began = time.perf_counter()
        try:
            self._commit(snapshot)
        finally:
            self.commit_seconds += time.perf_counter() - began

    def _commit(self, snapshot: bool) -> None:
        offsets = self.pending
        if not self._dirty and not offsets and (not snapshot or self._snapshot_current):
            return  # nothing new since the last commit (e.g. a revoke right after shutdown)
        snapshot = snapshot or bool(offsets.keys() - self.snapshot_partitions)
        # no position processed (e.g. stopped before the first assignment): a snapshot would
        # claim the restored state covers no input, and the next start would not replay
        snapshot = snapshot and bool(self.processed)
        try:
            if snapshot:
                self.seq += 1
                self._store.write(self._producer, self.seq, self._snapshot(), dict(self.processed))
            cursor = self._cursor() if self._cursor is not None else None
            if cursor is not None and cursor != self._cursor_committed:
                self._store.write_cursor(self._producer, cursor)
            if offsets:
                self._producer.send_offsets_to_transaction(
                    [TopicPartition(t, p, o) for (t, p), o in sorted(offsets.items())],
                    self._consumer.group_metadata(),
                )
            if self._fault_hook is not None:
                self._fault_hook("commit")
            self._commit_transaction()
        except (FencedError, ProducerFatalError):
            raise  # the producer is dead: its transaction is void, and an abort would fail
        except TransactionError as exc:
            if not exc.abortable:  # e.g. send_offsets timed out: the transaction's state is
                # unknown, and a replay into it would publish twice; a new producer settles it
                raise ProducerFatalError(f"transaction in an unknown state: {exc}") from exc
            self.abort()
            raise
        except BrokerError:  # not authorized: no retry mends it
            with contextlib.suppress(StreamappError):
                self.abort()
            raise
        except Exception as exc:  # an injected fault or a bug: never leave the transaction open
            self.abort()
            raise TransactionError(f"transaction aborted: {exc}") from exc
        self.committed.update(offsets)
        self._cursor_committed = cursor
        now = self._clock()
        self._last_commit = now
        if snapshot:
            self._last_snapshot = now
            self.snapshot_partitions = set(self.processed)
            self._snapshot_current = True
        self._dirty = False
        self.commits += 1
        self._producer.begin_transaction()
        logger.debug("committed transaction: offsets %s, snapshot %s", offsets, snapshot)

    def _commit_transaction(self) -> None:
        """Commit, calling again while librdkafka says the call may be retried (a commit that
        timed out is still under way: any other transactional call would conflict with it).

        A commit still in doubt after the last attempt leaves a producer that can neither
        commit nor abort: it is reported as failed for good, so the worker replaces it."""
        for attempt in range(1, COMMIT_ATTEMPTS + 1):
            try:
                self._producer.commit_transaction(COMMIT_TIMEOUT_S)
                return
            except TransactionError as exc:
                if not exc.retriable:
                    raise
                if attempt == COMMIT_ATTEMPTS:
                    raise ProducerFatalError(
                        f"commit still in doubt after {attempt} attempts: {exc}"
                    ) from exc
                logger.warning("commit_transaction failed (%s): calling it again", exc)

    def abort(self) -> None:
        """Abort the open transaction and open a new one; outputs since the last commit are void."""
        self.aborts += 1
        logger.warning("aborting the open transaction")
        try:
            self._producer.abort_transaction()
        except TransactionError as exc:  # e.g. the coordinator is away: no state to go on from
            raise ProducerFatalError(f"abort_transaction failed: {exc}") from exc
        self._producer.begin_transaction()
        self._dirty = False

    def forget(self, partitions: Iterable[tuple[str, int]]) -> None:
        for tp in partitions:
            self.processed.pop(tp, None)
            self.committed.pop(tp, None)
