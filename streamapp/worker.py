"""The worker's lifecycle: startup, the poll loop, rebalances, graceful shutdown. No ML here."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import numpy as np
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_STORED,
    KafkaException,
    TopicPartition,
)

from streamapp.assembly import build_codec, build_pipeline, load_served_bundle
from streamapp.batching import BatchPolicy
from streamapp.checkpoint import Checkpoint, TransactionalCheckpoint
from streamapp.errors import (
    BrokerError,
    DeliveryError,
    DeliveryTimeoutError,
    FencedError,
    ProducerFatalError,
    TransactionError,
)
from streamapp.events import Outputs
from streamapp.hotswap import ModelWatcher
from streamapp.kafka.admin import BrokerProbe, partition_counts
from streamapp.kafka.config import (
    consumer_config,
    producer_config,
    transactional_producer_config,
    validate_timing,
)
from streamapp.kafka.consumer import BatchConsumer
from streamapp.kafka.producer import OutputProducer
from streamapp.kafka.state_store import StateStore
from streamapp.model.bundle import Bundle
from streamapp.model.registry import ModelRef
from streamapp.model_updates import HeadFollower
from streamapp.ops.metrics import WorkerMetrics
from streamapp.ops.server import OpsServer
from streamapp.publish import Publisher
from streamapp.replay import ReplayGate
from streamapp.settings import Settings
from streamapp.shadow import Shadow
from streamapp.state import decode_state, encode_state

__all__ = ["RunSummary", "Worker"]

logger = logging.getLogger(__name__)

# lost outputs are recovered by re-reading; this many within the window means give up (exit)
_MAX_FAILURES = 5
_FAILURE_WINDOW_S = 60.0


@dataclass(frozen=True, slots=True)
class RunSummary:
    messages: int
    events_scored: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events_scored / self.seconds if self.seconds > 0 else 0.0


class Worker:
    """Consumes ``features`` + ``feedback``, runs the pipeline, publishes, checkpoints.

    ``run(count=, timeout=)`` bounds the loop, which makes it testable; without bounds it
    runs until SIGTERM/SIGINT (a second signal forces the exit).

    With ``processing_guarantee="exactly-once"`` outputs, input offsets and learning-state
    snapshots are committed in one transaction; on start, on assignment and after an aborted
    transaction the last snapshot is restored and the inputs after it are replayed without
    publishing (see :mod:`streamapp.replay`).
    """

    def __init__(
        self,
        settings: Settings,
        bundle: Bundle | None = None,
        *,
        on_batch: Callable[[Worker, Outputs], None] | None = None,
        fault_hook: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bundle = bundle or load_served_bundle(settings)
        self.codec = build_codec(settings, self.bundle)
        self.pipeline = build_pipeline(settings, self.bundle)
        batch = settings.batch
        self.policy = BatchPolicy(
            batch.max_size, batch.max_wait_ms / 1000.0, batch.idle_wait_ms / 1000.0
        )
        self.on_batch = on_batch
        self.fault_hook = fault_hook
        self.messages = 0
        self.busy_s = 0.0  # time spent decoding, scoring, learning and publishing
        self.recoveries = 0
        self.producer_restarts = 0
        self._failures: deque[float] = deque()  # when outputs were lost, for the give-up rule
        self.last_progress = time.monotonic()  # nothing pending, for /healthz
        self._running = False
        self._stopping = False
        self._consumer: BatchConsumer | None = None
        self._producer: OutputProducer | None = None
        self._checkpoint: Checkpoint | TransactionalCheckpoint | None = None
        self._store: StateStore | None = None
        self._gate = ReplayGate()
        self._restored_offsets: dict[tuple[str, int], int] = {}
        self._needs_recovery = False
        self._fenced = False
        self.metrics = WorkerMetrics(self)
        self.last_tick = time.monotonic()  # the poll loop's heartbeat, for /healthz
        self._publisher: Publisher | None = None
        self._server: OpsServer | None = None
        self._probe: BrokerProbe | None = None
        self._watcher: ModelWatcher | None = None
        self._heads: HeadFollower | None = None  # a scorer follows the learner's head
        self.shadow: Shadow | None = None  # a challenger, when one is configured

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        validate_timing(s)
        self._check_copartitioning()
        if s.exactly_once:
            self._producer = OutputProducer(transactional_producer_config(s))
            # fences an earlier instance with our transactional.id and aborts its open
            # transaction, so the state topic reads up to date below
            self._producer.init_transactions()
            self._store = StateStore(s.topics.state, s.transactional_id, consumer_config(s))
            first_seq = self._restore()
        else:
            self._producer = OutputProducer(producer_config(s))
            self.shadow = self._make_shadow()
        self._publisher = self._make_publisher()
        self._consumer = BatchConsumer(
            consumer_config(s),
            s.topics.inputs(),
            on_assign=self._on_assign if s.exactly_once else None,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
            max_idle_s=s.batch.align_max_idle_ms / 1000.0,
            # a partition this far ahead of the others is paused; each pause costs a refetch
            max_buffered=10 * s.batch.max_size,
        )
        interval = s.commit_interval_ms / 1000.0
        if s.exactly_once:
            self._checkpoint = TransactionalCheckpoint(
                self._consumer,
                self._producer,
                self._store_required(),
                self._learning_state,
                interval_s=interval,
                snapshot_interval_s=s.snapshot_interval_s,
                first_seq=first_seq,
                fault_hook=self.fault_hook,
            )
            self._checkpoint.snapshot_partitions = set(self._restored_offsets)
        else:
            self._checkpoint = Checkpoint(self._consumer, self._producer, interval)
        if s.role == "scorer":
            self._heads = HeadFollower(s, self.bundle.name, self.bundle.version)
        if s.registry is not None and s.model_name is not None:
            self._watcher = ModelWatcher(s, ModelRef(self.bundle.name, self.bundle.version))
        if s.http.enabled:
            self._probe = BrokerProbe(s)
            self._server = OpsServer(
                s.http.host, s.http.port, self.metrics.render, self.health, self.readiness
            )
            self._server.start()
        logger.info(
            "worker started: model %s %s, group %s, inputs %s, %s",
            self.bundle.name,
            self.bundle.version,
            s.group_id,
            s.topics.inputs(),
            s.processing_guarantee,
        )

    def stop(self) -> None:
        """Ask the loop to finish its batch and shut down gracefully."""
        self._running = False

    def run(self, *, count: int | None = None, timeout: float | None = None) -> RunSummary:
        """Process until stopped, or ``count`` input messages, or ``timeout`` seconds."""
        if self._consumer is None:
            self.start()
        assert self._consumer and self._producer and self._checkpoint
        restore = self._install_signal_handlers()
        started = time.monotonic()
        scored_before = self.pipeline.stats.events_scored
        messages_before = self.messages
        self._running = True
        try:
            while self._running:
                self.last_tick = time.monotonic()
                try:
                    self._step()
                except DeliveryError as exc:
                    self._outputs_failed(exc)
                if count is not None and self.messages - messages_before >= count:
                    break
                if timeout is not None and time.monotonic() - started >= timeout:
                    break
            self._commit(final=True)
        except FencedError:
            self._fenced = True  # another instance owns our transactional.id now: write nothing
            logger.error(
                "fenced by a newer instance of %s: stopping", self.settings.transactional_id
            )
            raise
        finally:
            restore()
        return RunSummary(
            self.messages - messages_before,
            self.pipeline.stats.events_scored - scored_before,
            time.monotonic() - started,
        )

    def _step(self) -> None:
        """One turn of the loop: poll a batch, process and publish it, commit when due."""
        assert self._consumer is not None and self._checkpoint is not None
        self._apply_model_updates()
        messages = self._consumer.poll_batch(self.policy)
        if self._needs_recovery:
            self._recover()
            return
        if messages:
            began = time.perf_counter()
            decoded = self.codec.decode_batch(messages)
            replaying = self._gate.any_replayed(messages)
            outputs = self.pipeline.process(decoded)
            if self.shadow is not None:
                self.shadow.process(decoded, outputs, replaying)
            self._publish(outputs, replaying)
            self._checkpoint.store(decoded.offsets)
            self._observe(len(messages), outputs, began)
            if self._gate.active and isinstance(self._checkpoint, TransactionalCheckpoint):
                self._gate.advance(self._checkpoint.processed)
            if self.on_batch:
                self.on_batch(self, outputs)
        self._commit(final=False)
        if not self._checkpoint.pending:
            self.last_progress = time.monotonic()

    def _outputs_failed(self, exc: DeliveryError) -> None:
        """Outputs since the last commit may be lost: replace a failed producer and read the
        inputs again from the last commit (a redelivered event re-emits its prediction).

        Outputs that are only late (still queued) keep their offsets pending instead.
        """
        if isinstance(exc, DeliveryTimeoutError):
            logger.warning("commit deferred: %s", exc)
            return
        now = time.monotonic()
        self._failures.append(now)
        while self._failures and now - self._failures[0] > _FAILURE_WINDOW_S:
            self._failures.popleft()
        if len(self._failures) > _MAX_FAILURES:
            raise BrokerError(
                f"outputs failed {len(self._failures)} times in {_FAILURE_WINDOW_S:.0f}s, "
                f"giving up: {exc}"
            ) from exc
        logger.warning("outputs since the last commit may be lost (%s): re-reading", exc)
        if isinstance(exc, ProducerFatalError):
            self._replace_producer()
        elif isinstance(self._checkpoint, TransactionalCheckpoint):
            self._checkpoint.abort()  # its records are void; the replay produces them again
        self._needs_recovery = True

    def _replace_producer(self) -> None:
        """A new output producer (a transactional one fences the failed one's epoch)."""
        assert self._producer is not None and self._checkpoint is not None
        self._producer.close()
        s = self.settings
        if s.exactly_once:
            self._producer = OutputProducer(transactional_producer_config(s))
            self._producer.init_transactions()
        else:
            self._producer = OutputProducer(producer_config(s))
        self._publisher = self._make_publisher()
        if self.shadow is not None:
            self.shadow.publisher.sink = self._producer
        self._checkpoint.use_producer(self._producer)
        self.producer_restarts += 1
        logger.warning("replaced the output producer after a fatal error")

    def close(self) -> None:
        """Commit what is done, then leave the group and flush the producer."""
        if self._checkpoint is not None and not self._fenced:
            try:
                self._publish_final_report()
                self._commit(final=True)
            except Exception:
                logger.exception("final commit failed; the uncommitted inputs will be re-read")
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None and not self.settings.exactly_once:
            self._producer.flush()
        if self._server is not None:
            self._server.close()
        if self._watcher is not None:
            self._watcher.close()
            self._watcher = None
        if self._heads is not None:
            self._heads.close()
            self._heads = None
        if self._probe is not None:
            self._probe.close()
        self._probe = None
        self._consumer = self._producer = self._checkpoint = self._server = None
        logger.info("worker stopped after %d messages", self.messages)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop's parts ------------------------------------------------------------------

    def _apply_model_updates(self) -> None:
        """Between two batches: a promoted bundle, then the learner's newest head."""
        if self._watcher is not None and (bundle := self._watcher.poll()) is not None:
            self._swap(bundle)
        if self._heads is not None and (head := self._heads.poll()) is not None:
            self.pipeline.head.load_state_dict(head.head)
            logger.info("head updated to head_seq %d", head.head_seq)

    def _make_publisher(self) -> Publisher:
        assert self._producer is not None
        return Publisher(
            self._producer,
            self.codec,
            self.settings.topics,
            self.bundle.name,
            self.bundle.version,
            publish_examples=self.settings.role == "scorer",
            instance=self.settings.instance_id,
        )

    def _swap(self, bundle: Bundle) -> None:
        """Serve ``bundle`` from the next batch on (called between batches)."""
        old, pending = self.bundle, len(self.pipeline.ledger)
        stats = self.pipeline.stats
        self.bundle = bundle
        self.codec = build_codec(self.settings, bundle)
        self.pipeline = build_pipeline(self.settings, bundle)
        self.pipeline.stats = stats  # the counters go on; events pending a label do not
        self._publisher = self._make_publisher()
        if isinstance(self._checkpoint, TransactionalCheckpoint):
            self._commit(final=True)  # a replay never crosses the swap
        logger.info(
            "now serving %s %s (was %s): %d events pending a label are dropped",
            bundle.name,
            bundle.version,
            old.version,
            pending,
        )

    def _observe(self, messages: int, outputs: Outputs, began: float) -> None:
        elapsed = time.perf_counter() - began
        self.messages += messages
        self.busy_s += elapsed
        predictions = outputs.predictions
        latencies = time.time() - predictions.event_ts if predictions is not None else np.empty(0)
        self.metrics.observe_batch(messages, elapsed, latencies)

    def _commit(self, final: bool) -> None:
        assert self._checkpoint is not None
        try:
            if final:  # with a snapshot on the way out, a restart needs no replay
                self._checkpoint.commit(snapshot=True)
            else:
                self._checkpoint.commit_if_due()
        except TransactionError as exc:
            logger.warning("transaction aborted (%s): restoring the last snapshot", exc)
            self._needs_recovery = True
            if final:
                raise
            self._recover()

    def _publish_final_report(self) -> None:
        """The last partial window's drift report, on the way out (not in a replay, whose
        reports went out before the restore)."""
        assert self._checkpoint is not None
        if self._gate.active or (report := self.pipeline.final_report(time.time())) is None:
            return
        self._publish(Outputs(drift_reports=[report]))
        self._checkpoint.store({})  # something to commit: in exactly-once, the report

    def _publish(self, outputs: Outputs, replaying: bool = False) -> None:
        assert self._publisher is not None
        # replayed inputs were published before the restore
        self._publisher.publish(outputs, self._gate.is_live if replaying else None)

    # -- what /metrics, /healthz and /readyz read (from the HTTP thread) ---------------------

    def model_info(self) -> dict[str, str]:
        s = self.settings
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "variant": s.variant,
            "device": s.device,
            "processing_guarantee": s.processing_guarantee,
        }

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        consumer = self._consumer
        return consumer.lag() if consumer is not None else {}

    def event_counts(self) -> dict[str, int]:
        checkpoint = self._checkpoint
        if checkpoint is None:
            return {}
        counts = {"commits": checkpoint.commits}
        if isinstance(checkpoint, TransactionalCheckpoint):
            counts["transaction_aborts"] = checkpoint.aborts
        if self._watcher is not None:
            counts["model_swaps"] = self._watcher.swaps
            counts["model_refusals"] = self._watcher.refusals
        return counts

    def last_drift_report(self) -> dict[str, object] | None:
        return self._publisher.last_report if self._publisher else None

    def health(self) -> dict[str, bool]:
        """Alive, the poll loop ticked within ``http.stall_s``, and what it processed was
        committed within ``http.stall_s`` (a loop spinning against a dead broker is unhealthy)."""
        now, stall = time.monotonic(), self.settings.http.stall_s
        return {
            "alive": True,
            "loop_ticking": not (self._running and now - self.last_tick > stall),
            "making_progress": not (self._running and now - self.last_progress > stall),
        }

    def readiness(self) -> dict[str, bool]:
        consumer = self._consumer
        return {
            "model_loaded": self.pipeline is not None,
            "partitions_assigned": bool(consumer and consumer.assignment),
            "broker_reachable": bool(self._probe and self._probe.reachable()),
        }

    # -- exactly-once: restore and replay ----------------------------------------------------

    def _store_required(self) -> StateStore:
        assert self._store is not None
        return self._store

    def _restore(self) -> int:
        """Load the latest snapshot into a fresh pipeline; returns its sequence number."""
        snapshot = self._store_required().read_latest()
        self.pipeline = build_pipeline(self.settings, self.bundle)
        self.shadow = self._make_shadow()
        if snapshot is None:
            self._restored_offsets = {}
            logger.info(
                "no learning-state snapshot for %s: starting from the source head",
                self.settings.transactional_id,
            )
            return 0
        state = decode_state(snapshot.blob)
        self.pipeline.load_state_dict(state)
        if self.shadow is not None and "shadow" in state:
            self.shadow.load_state_dict(state["shadow"])
        self._restored_offsets = dict(snapshot.offsets)
        logger.info(
            "restored snapshot %d (head_seq %d, %d pending labels)",
            snapshot.seq,
            self.pipeline.head.n_learned,
            len(self.pipeline.ledger),
        )
        return snapshot.seq

    def _learning_state(self) -> bytes:
        """What a snapshot holds: the pipeline's state, and the challenger's when there is one."""
        state = self.pipeline.state_dict()
        if self.shadow is not None:
            state["shadow"] = self.shadow.state_dict()
        return encode_state(state)

    def _make_shadow(self) -> Shadow | None:
        """A fresh challenger, when one is configured (it writes through our producer)."""
        if not self.settings.challenger.enabled:
            return None
        return Shadow(self.settings, self.bundle, self._producer)

    def _start_positions(
        self, partitions: list[tuple[str, int]]
    ) -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        """Where each partition resumes (the snapshot's offset, else the committed one), and
        the committed offsets up to which that is a replay."""
        assert self._consumer is not None
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.committed([TopicPartition(t, p) for t, p in partitions])
            if tp.offset >= 0
        }
        starts = {}
        for tp in partitions:
            restored = self._restored_offsets.get(tp)
            if restored is not None and restored < committed.get(tp, restored + 1):
                starts[tp] = restored
                self._gate.replay_until(tp, committed[tp])
            elif tp in committed:
                starts[tp] = committed[tp]
        return starts, committed

    def _on_assign(self, partitions: list[TopicPartition]) -> list[TopicPartition] | None:
        starts, committed = self._start_positions([(tp.topic, tp.partition) for tp in partitions])
        if isinstance(self._checkpoint, TransactionalCheckpoint):
            self._checkpoint.committed.update(committed)
            for tp, offset in starts.items():
                self._checkpoint.processed.setdefault(tp, offset)
        return [
            TopicPartition(
                tp.topic, tp.partition, starts.get((tp.topic, tp.partition), OFFSET_STORED)
            )
            for tp in partitions
        ]

    def _recover(self) -> None:
        """Read again from the last commit: after an aborted transaction (the in-memory state
        includes work whose outputs were discarded, so the last snapshot is restored first)
        or after outputs were lost in at-least-once mode. Retried on the next turn while the
        broker cannot answer."""
        assert self._consumer is not None and self._checkpoint is not None
        try:
            if isinstance(self._checkpoint, TransactionalCheckpoint):
                self._restore_and_rewind(self._checkpoint)
            else:
                self._rewind_to_committed(self._checkpoint)
        except KafkaException as exc:
            logger.warning("recovery postponed, the broker did not answer: %s", exc)
            time.sleep(self.policy.idle_wait)
            return
        self._needs_recovery = False
        self.recoveries += 1

    def _restore_and_rewind(self, checkpoint: TransactionalCheckpoint) -> None:
        assert self._consumer is not None
        first_seq = self._restore()
        checkpoint.seq = max(checkpoint.seq, first_seq)
        assigned = sorted(self._consumer.assignment)
        self._gate = ReplayGate()
        starts, committed = self._start_positions(assigned)
        for tp in assigned:  # never committed: back to where the group started reading
            starts.setdefault(tp, self._reset_offset())
        checkpoint.reset(starts, committed, set(self._restored_offsets))
        self._consumer.rewind(starts)
        logger.info("rewound to %s (committed %s)", starts, committed)

    def _rewind_to_committed(self, checkpoint: Checkpoint) -> None:
        assert self._consumer is not None
        assigned = sorted(self._consumer.assignment)
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in self._consumer.committed([TopicPartition(t, p) for t, p in assigned])
        }
        starts = {
            tp: offset if (offset := committed.get(tp, -1)) >= 0 else self._reset_offset()
            for tp in assigned
        }
        checkpoint.forget(assigned)
        self._consumer.rewind(starts)
        logger.info("rewound to the committed offsets %s", starts)

    def _reset_offset(self) -> int:
        reset = str(consumer_config(self.settings).get("auto.offset.reset", "earliest"))
        return OFFSET_BEGINNING if reset in ("earliest", "smallest", "beginning") else OFFSET_END

    # -- rebalancing -----------------------------------------------------------------------

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        # commit what is done before the partitions go to another worker
        if self._checkpoint is None:
            return
        gone = [(tp.topic, tp.partition) for tp in partitions]
        if isinstance(self._checkpoint, TransactionalCheckpoint):
            try:
                self._checkpoint.commit(snapshot=True)
            except TransactionError as exc:
                logger.warning("commit on revoke failed (%s); recovering after the rebalance", exc)
                self._needs_recovery = True
            self._checkpoint.forget(gone)
            self._gate.forget(gone)
        else:
            self._checkpoint.commit(only=gone)

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        if self._checkpoint is None:
            return
        gone = [(tp.topic, tp.partition) for tp in partitions]
        if isinstance(self._checkpoint, TransactionalCheckpoint):
            # the open transaction holds outputs of partitions we no longer own
            self._checkpoint.abort()
            self._needs_recovery = True
            self._gate.forget(gone)
        self._checkpoint.forget(gone)

    def _check_copartitioning(self) -> None:
        topics = self.settings.topics
        counts = partition_counts(self.settings, topics.inputs())
        if len(set(counts.values())) > 1:
            logger.warning(
                "%s and %s have different partition counts %s: labels may reach another worker "
                "than their events and be counted as orphans",
                topics.features,
                topics.feedback,
                counts,
            )

    def _install_signal_handlers(self) -> Callable[[], None]:
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}

        def handle(signum: int, _frame: FrameType | None) -> None:
            if self._stopping:
                logger.warning("second %s: forcing exit", signal.Signals(signum).name)
                os._exit(128 + signum)
            logger.info("%s: finishing the batch and shutting down", signal.Signals(signum).name)
            self._stopping = True
            self.stop()

        for sig in previous:
            signal.signal(sig, handle)

        def restore() -> None:
            if self._stopping:
                return  # shutting down after a signal: a second one still forces the exit
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
