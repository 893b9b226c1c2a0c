"""The delivery guarantee: how outputs reach Kafka, how input offsets are committed, and how a
worker recovers. The one owner of exactly-once; the worker's loop reads the same for both::

    if delivery.recovery_required:
        delivery.recover()
    else:
        live = delivery.live(batch)  # which outputs to publish: a replay publishes none
        ...publish what the engine scores and learns, only where live...
        delivery.store(batch.offsets)
    delivery.commit_if_due()

:class:`AtLeastOnce` flushes outputs, then commits offsets; after lost outputs it re-reads
from the committed offsets. :class:`ExactlyOnce` commits outputs, input offsets and
learning-state snapshots in one transaction; on start, on assignment and after an aborted
transaction it restores the last snapshot and replays the inputs after it without publishing
(:mod:`streamapp.checkpointing.restore`).
Both write through themselves (``produce``), so a producer that failed fatally is replaced
without anyone else noticing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable

from confluent_kafka import OFFSET_STORED, KafkaException
from confluent_kafka import TopicPartition as KafkaPartition

from streamapp.checkpointing.checkpoint import OffsetCheckpoint, TransactionalCheckpoint
from streamapp.checkpointing.outage import FailureWindow, OutageClock
from streamapp.checkpointing.positions import reset_position
from streamapp.checkpointing.restore import LearningState, SnapshotRestore
from streamapp.checkpointing.state_store import StateStore
from streamapp.codec import Message
from streamapp.errors import (
    BrokerError,
    ConsumerFencedError,
    DeliveryError,
    DeliveryTimeoutError,
    FencedError,
    ProducerFatalError,
    TransactionError,
)
from streamapp.events import SourcePosition
from streamapp.kafka.config import consumer_config, producer_config, transactional_producer_config
from streamapp.kafka.consumer import BatchConsumer
from streamapp.kafka.producer import OutputProducer
from streamapp.settings import Settings

__all__ = ["AtLeastOnce", "Delivery", "ExactlyOnce", "make_delivery"]

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
IsLive = Callable[[SourcePosition], bool]

# lost outputs are recovered by re-reading; this many within the window means give up (exit)
MAX_FAILURES = 5
FAILURE_WINDOW_S = 60.0


class Delivery:
    """What both guarantees share: the producer (replaced after a fatal error), the give-up
    rule for repeatedly lost outputs, and the recovery flag the loop checks."""

    # each guarantee's checkpoint, attached with the consumer: it counts commits and holds
    # what is not committed yet
    _checkpoint: OffsetCheckpoint | TransactionalCheckpoint | None

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.producer: OutputProducer | None = None
        self.recovery_required = False
        self.recoveries = 0
        self.producer_restarts = 0
        self._consumer: BatchConsumer | None = None
        self._failures = FailureWindow(MAX_FAILURES, FAILURE_WINDOW_S)
        self._dead_producer: FencedError | ProducerFatalError | None = None
        self.outage = OutageClock(settings.delivery.broker_outage_limit_s)
        self._next_probe = 0.0
        self._holding = False  # closing with the broker away: nothing more is committed

    # -- the sink the publishers write to ---------------------------------------------------

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        assert self.producer is not None
        self.producer.produce(topic, value, key)

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        assert self.producer is not None
        self.producer.produce_many(topic, records)

    # -- what every guarantee answers -------------------------------------------------------

    @property
    def commits(self) -> int:
        return self._checkpoint.commits if self._checkpoint else 0

    @property
    def commit_seconds(self) -> float:
        return self._checkpoint.commit_seconds if self._checkpoint else 0.0

    @property
    def pending(self) -> bool:
        return bool(self._checkpoint and self._checkpoint.pending)

    def start(self) -> None:
        self.producer = self._new_producer()

    def attach(self, consumer: BatchConsumer) -> None:
        """Deliver for ``consumer``'s inputs (its commits and positions)."""
        self._consumer = consumer

    def use_consumer(self, consumer: BatchConsumer) -> None:
        """Go on with ``consumer`` in place of a fenced one: everything since the last commit
        is read again once it has partitions."""
        self._consumer = consumer
        if self._checkpoint is not None:
            self._checkpoint.use_consumer(consumer)
            self._checkpoint.forget(list(self._checkpoint.pending))
        self.recovery_required = True

    def still_owner(self, fenced: ConsumerFencedError) -> bool:
        """Whether this instance still owns its identity after its consumer was fenced:
        at least once cannot tell (a newer instance took over: stop)."""
        return False

    def on_assign(self, partitions: list[KafkaPartition]) -> list[KafkaPartition] | None:
        return None  # the committed offsets

    def live(self, messages: Iterable[Message]) -> IsLive | None:
        """Which of a batch's outputs to publish (``None``: all of them)."""
        return None

    @property
    def replaying(self) -> bool:
        return False

    def outputs_failed(self, exc: DeliveryError) -> None:
        """Outputs since the last commit may be lost: replace a failed producer and recover
        by reading the inputs again from the last commit. Outputs that are only late (still
        queued) keep their offsets pending instead."""
        if isinstance(exc, DeliveryTimeoutError):
            self.outage.failed(str(exc))  # gives up (raises) past the outage limit
            return
        if self._failures.failed():
            raise BrokerError(
                f"outputs failed {len(self._failures)} times in {FAILURE_WINDOW_S:.0f}s, "
                f"giving up: {exc}"
            ) from exc
        logger.warning("outputs since the last commit may be lost (%s): re-reading", exc)
        if isinstance(exc, ProducerFatalError):
            self._replace_producer()
        else:
            try:
                self._discard_open_outputs()
            except (TransactionError, ProducerFatalError, KafkaException) as failed:
                # e.g. the coordinator is away: a new producer's init aborts them instead
                logger.warning("could not discard the open outputs (%s): new producer", failed)
                self._replace_producer()
        self.recovery_required = True

    def recover(self) -> None:
        """Read again from the last commit; retried on the next turn while the broker
        cannot answer. A producer found fenced in a rebalance stops the worker here; one
        found dead is replaced first."""
        dead, self._dead_producer = self._dead_producer, None
        if isinstance(dead, FencedError):
            raise dead
        if dead is not None:
            self._replace_producer()
        try:
            self._rewind()
        except (KafkaException, BrokerError) as exc:
            self.outage.failed(f"recovery postponed: {exc}")  # raises past the outage limit
            time.sleep(self.settings.batch.idle_wait_ms / 1000.0)
            return
        self.recovery_required = False
        self.recoveries += 1

    def flush(self) -> None:
        """On close: wait for what is not in a transaction."""

    def hold_commits(self) -> None:
        """Commit nothing more, not even in a revoke on the way out (the broker is away)."""
        self._holding = True

    def _may_commit_on_revoke(self) -> bool:
        """Not while a recovery is due: the offsets stored since the last commit stand for
        outputs that were aborted or lost, and committing them would lose those outputs."""
        return not (self._holding or self.recovery_required)

    def commit_if_due(self) -> None:
        """Commit when due; a commit that went through ends an outage. During an outage with
        nothing left to commit (the partitions were lost with it), a metadata request a
        second decides: answered, the outage is over; not, the outage clock runs on."""
        before = self.commits
        self._commit_if_due()
        if self.commits != before:
            self.outage.succeeded()
        elif self.outage.down_s and not self.pending:
            now = time.monotonic()
            if now >= self._next_probe:
                self._next_probe = now + 1.0
                if self._consumer_required().reachable(timeout=1.0):
                    self.outage.succeeded()
                else:
                    self.outage.failed("no broker answers")  # raises past the limit

    def _commit_if_due(self) -> None:
        raise NotImplementedError

    # -- the parts each guarantee fills in --------------------------------------------------

    def _new_producer(self) -> OutputProducer:
        raise NotImplementedError

    def _use_producer(self, producer: OutputProducer) -> None:
        raise NotImplementedError

    def _discard_open_outputs(self) -> None:
        """Outputs not yet committed are void (exactly-once aborts them)."""

    def _rewind(self) -> None:
        raise NotImplementedError

    def _replace_producer(self) -> None:
        """A new producer in place of one librdkafka cannot resume; tried again while the
        broker is away, up to the outage limit."""
        assert self.producer is not None
        self.producer.close()
        while True:
            try:
                self.producer = self._new_producer()
                break
            except (TransactionError, ProducerFatalError, KafkaException) as exc:
                # ProducerFatalError: an init_transactions that never returned (abandoned)
                self.outage.failed(f"no new producer yet: {exc}")  # raises past the limit
                time.sleep(1.0)
        self._use_producer(self.producer)
        self.producer_restarts += 1
        logger.warning("replaced the output producer after a fatal error")

    def _consumer_required(self) -> BatchConsumer:
        assert self._consumer is not None, "attach() a consumer first"
        return self._consumer


class AtLeastOnce(Delivery):
    """Flush the outputs, then commit the offsets of what produced them."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._checkpoint: OffsetCheckpoint | None = None

    @property
    def aborts(self) -> int:
        return 0

    def attach(self, consumer: BatchConsumer, checkpoint: OffsetCheckpoint | None = None) -> None:
        """Deliver for ``consumer``'s inputs, through ``checkpoint`` (default: offsets
        committed after the producer's flush)."""
        super().attach(consumer)
        if checkpoint is None:
            assert self.producer is not None
            interval = self.settings.delivery.commit_interval_ms / 1000.0
            checkpoint = OffsetCheckpoint(consumer, self.producer, interval)
        self._checkpoint = checkpoint

    def store(self, offsets: dict[Partition, int]) -> None:
        """A batch is processed and its outputs produced: commit up to ``offsets`` when due."""
        self._required().store(offsets)

    def store_report(self) -> None:
        """A drift report outside any batch went out: flushed with the next commit, it moves
        no offset, so there is nothing more to do."""

    def _commit_if_due(self) -> None:
        self._required().commit_if_due()

    def commit_final(self) -> None:
        self._required().commit()

    def on_revoke(self, partitions: list[KafkaPartition]) -> None:
        # commit what is done before the partitions go to another worker; with the broker
        # away that fails, and the next owner re-reads from the last commit (at least once)
        if self._checkpoint is None:
            return
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        if not self._may_commit_on_revoke():
            self._checkpoint.forget(revoked)
            return
        try:
            self._checkpoint.commit(only=revoked)
        except (DeliveryError, KafkaException) as exc:
            logger.warning("commit on revoke failed (%s): the next owner re-reads", exc)
            self._checkpoint.forget(revoked)
            if isinstance(exc, DeliveryError) and not isinstance(exc, DeliveryTimeoutError):
                # a lost output, maybe of a partition we keep: re-read those too
                if isinstance(exc, ProducerFatalError):
                    self._dead_producer = exc
                self.recovery_required = True

    def on_lost(self, partitions: list[KafkaPartition]) -> None:
        if self._checkpoint is not None:
            self._checkpoint.forget((tp.topic, tp.partition) for tp in partitions)

    def flush(self) -> None:
        if self.producer is not None:
            self.producer.flush()

    def _new_producer(self) -> OutputProducer:
        return OutputProducer(producer_config(self.settings))

    def _use_producer(self, producer: OutputProducer) -> None:
        self._required().use_producer(producer)

    def _rewind(self) -> None:
        consumer = self._consumer_required()
        assigned = sorted(consumer.assignment)
        committed = consumer.committed(assigned)
        reset = reset_position(self.settings)
        starts = {tp: committed.get(tp, reset) for tp in assigned}
        self._required().forget(assigned)
        consumer.rewind(starts)
        logger.info("rewound to the committed offsets %s", starts)

    def _required(self) -> OffsetCheckpoint:
        assert self._checkpoint is not None, "attach() a consumer first"
        return self._checkpoint


class ExactlyOnce(Delivery):
    """Outputs, input offsets and learning-state snapshots in one transaction; restore and
    replay (without publishing) after a restart, a lost partition or an aborted transaction."""

    def __init__(
        self,
        settings: Settings,
        state: LearningState,
        fault_hook: Callable[[str], None] | None = None,
        *,
        store: StateStore | None = None,
    ) -> None:
        super().__init__(settings)
        self._state = state
        self._fault_hook = fault_hook
        self._store = store or StateStore(
            settings.topics.state, settings.transactional_id, consumer_config(settings)
        )
        self._restore = SnapshotRestore(self._store, state)
        self._seq = 0
        self._checkpoint: TransactionalCheckpoint | None = None

    @property
    def aborts(self) -> int:
        return self._checkpoint.aborts if self._checkpoint else 0

    @property
    def replaying(self) -> bool:
        return self._restore.replaying

    def start(self) -> None:
        # fences an earlier instance with our transactional.id and aborts its open
        # transaction, so the state topic reads up to date below
        super().start()
        self._seq = self.restore()

    def attach(
        self, consumer: BatchConsumer, checkpoint: TransactionalCheckpoint | None = None
    ) -> None:
        """Deliver for ``consumer``'s inputs, through ``checkpoint`` (default: one transaction
        per commit, with the learning-state snapshots)."""
        super().attach(consumer)
        if checkpoint is not None:
            self._checkpoint = checkpoint
            return
        assert self.producer is not None
        s = self.settings
        self._checkpoint = TransactionalCheckpoint(
            consumer,
            self.producer,
            self._store,
            self._state.snapshot,
            interval_s=s.delivery.commit_interval_ms / 1000.0,
            snapshot_interval_s=s.delivery.snapshot_interval_s,
            first_seq=self._seq,
            cursor=lambda: self._state.drift_cursor().to_json(),
            fault_hook=self._fault_hook,
            snapshot_partitions=self._restore.offsets,  # the restored snapshot covers them
        )

    def live(self, messages: Iterable[Message]) -> IsLive | None:
        # replayed inputs were published before the restore
        return self._restore.live(messages)

    def store(self, offsets: dict[Partition, int]) -> None:
        """A batch is processed and its outputs are in the open transaction: commit up to
        ``offsets`` with them; a replay that reached its end is over."""
        self._required().store(offsets)
        self._advance_replay()

    def store_report(self) -> None:
        """A drift report outside any batch is in the open transaction: the next commit is
        due for it, though it moves no offset."""
        self._required().outputs_written()
        self._advance_replay()

    def _advance_replay(self) -> None:
        self._restore.advance(self._required().processed)

    def _commit_if_due(self) -> None:
        try:
            self._required().commit_if_due()
        except TransactionError as exc:
            logger.warning("transaction aborted (%s): restoring the last snapshot", exc)
            self.recovery_required = True
            self.recover()

    def commit_final(self) -> None:
        """Commit with a snapshot, so a restart needs no replay. Not while a recovery is due:
        the open transaction's outputs were aborted, and committing the offsets behind them
        would lose them (the restart replays from the last commit instead)."""
        if self.recovery_required:
            raise TransactionError("a recovery is due: nothing committed; a restart replays")
        try:
            self._required().commit(snapshot=True)
        except TransactionError as exc:
            logger.warning("transaction aborted (%s): restoring the last snapshot", exc)
            self.recovery_required = True
            raise

    def on_assign(self, partitions: list[KafkaPartition]) -> list[KafkaPartition] | None:
        try:
            starts, committed = self._start_positions(
                [(tp.topic, tp.partition) for tp in partitions]
            )
        except KafkaException as exc:  # the coordinator is away: raising here escapes
            logger.warning("start positions unknown (%s): restoring after the rebalance", exc)
            self.recovery_required = True  # the rewind positions every assigned partition
            return None
        if self._checkpoint is not None:
            self._checkpoint.assigned(starts, committed)
        self._restore.end_if_none(partitions)
        return [
            KafkaPartition(
                tp.topic, tp.partition, starts.get((tp.topic, tp.partition), OFFSET_STORED)
            )
            for tp in partitions
        ]

    def on_revoke(self, partitions: list[KafkaPartition]) -> None:
        if self._checkpoint is None:
            return
        revoked = [(tp.topic, tp.partition) for tp in partitions]
        if not self._may_commit_on_revoke():
            self.forget(revoked)
            return
        try:
            self._checkpoint.commit(snapshot=True)
            # the state covers them up to here: if they come back, nothing is replayed
            self._restore.covered(self._checkpoint.processed, revoked)
        except TransactionError as exc:
            logger.warning("commit on revoke failed (%s); recovering after the rebalance", exc)
            self.recovery_required = True
        except (FencedError, ProducerFatalError) as exc:
            self._after_rebalance(exc)
        self.forget(revoked)

    def on_lost(self, partitions: list[KafkaPartition]) -> None:
        if self._checkpoint is None:
            return
        # the open transaction holds outputs of partitions we no longer own
        try:
            self._checkpoint.abort()
        except (FencedError, ProducerFatalError) as exc:
            self._after_rebalance(exc)
        self.recovery_required = True
        self.forget([(tp.topic, tp.partition) for tp in partitions])

    def still_owner(self, fenced: ConsumerFencedError) -> bool:
        """A newer instance inits its producer (fencing ours) before its consumer joins, so a
        consumer fenced while the producer still is not was fenced by itself: librdkafka
        rejoining after a coordinator failover (cf. KAFKA-20985). Aborting the open
        transaction asks the broker; the replay redoes what it held."""
        try:
            self._required().abort()
        except FencedError:
            return False
        except ProducerFatalError as exc:  # replaced before the recovery
            self._dead_producer = exc
        logger.warning("consumer fenced (%s), producer not: a self-fence, rejoining", fenced)
        return True

    def _after_rebalance(self, exc: FencedError | ProducerFatalError) -> None:
        """A dead producer met in a rebalance callback: raising there would escape
        librdkafka (and its close()), so the loop's next recovery raises or replaces it."""
        logger.warning("producer failed in a rebalance (%s): handled after it", exc)
        self._dead_producer = exc
        self.recovery_required = True

    def forget(self, gone: list[Partition]) -> None:
        """Partitions that went away: nothing pending of theirs is committed, and a replay
        cut short goes on if they come back (the next assignment ends it)."""
        self._required().forget(gone)
        self._restore.forget(gone)

    def _new_producer(self) -> OutputProducer:
        producer = OutputProducer(transactional_producer_config(self.settings))
        producer.init_transactions()
        return producer

    def _use_producer(self, producer: OutputProducer) -> None:
        self._required().use_producer(producer)

    def _discard_open_outputs(self) -> None:
        self._required().abort()  # its records are void; the replay produces them again

    def restore(self) -> int:
        """Load the latest snapshot into fresh learning state; returns its sequence number."""
        return self._restore.restore()

    def _rewind(self) -> None:
        """The in-memory state includes work whose outputs were discarded: restore the last
        snapshot and replay from it."""
        checkpoint, consumer = self._required(), self._consumer_required()
        checkpoint.restored(self.restore())
        assigned = sorted(consumer.assignment)
        starts, committed = self._start_positions(assigned)
        processed = dict(starts)  # real offsets only: a snapshot records them
        reset = reset_position(self.settings)
        for tp in assigned:  # never committed: back to where the group started reading
            starts.setdefault(tp, reset)
        checkpoint.reset(processed, committed, set(self._restore.offsets))
        self._restore.end_if_none(assigned)
        consumer.rewind(starts)
        logger.info("rewound to %s (committed %s)", starts, committed)

    def _start_positions(
        self, partitions: list[Partition]
    ) -> tuple[dict[Partition, int], dict[Partition, int]]:
        """Where each partition resumes (the snapshot's offset, else the committed one), and
        the committed offsets up to which that is a replay."""
        committed = self._consumer_required().committed(partitions)
        return self._restore.positions(partitions, committed), committed

    def _required(self) -> TransactionalCheckpoint:
        assert self._checkpoint is not None, "attach() a consumer first"
        return self._checkpoint


def make_delivery(
    settings: Settings, state: LearningState, fault_hook: Callable[[str], None] | None = None
) -> AtLeastOnce | ExactlyOnce:
    """The delivery ``settings.delivery.processing_guarantee`` names."""
    if settings.exactly_once:
        return ExactlyOnce(settings, state, fault_hook)
    return AtLeastOnce(settings)
