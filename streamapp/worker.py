"""The worker's lifecycle: startup, the poll loop, rebalances, graceful shutdown. No ML here,
and no branch on the delivery guarantee: :mod:`streamapp.checkpointing.delivery` owns it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from streamapp.assembly import build_codec, load_served_bundle
from streamapp.batching import BatchPolicy
from streamapp.checkpointing.delivery import AtLeastOnce, ExactlyOnce, make_delivery
from streamapp.codec import one_line
from streamapp.codec.avro_out import AvroOutputs, avro_outputs
from streamapp.codec.registry import RegistryHold, RegistryUnavailableError
from streamapp.codec.wiring import check_mappings, close_registry
from streamapp.drift.report import DriftReport
from streamapp.engine import Engine
from streamapp.errors import ConsumerFencedError, DeliveryError, FencedError
from streamapp.events import Outputs
from streamapp.kafka.access import check_access
from streamapp.kafka.admin import BrokerProbe, partition_counts
from streamapp.kafka.config import consumer_config, validate_timing
from streamapp.kafka.consumer import BatchConsumer
from streamapp.lifecycle import Bounds, ExitSignals, tune_garbage_collector
from streamapp.model.bundle import Bundle
from streamapp.model.registry import ModelRef
from streamapp.ops.metrics import WorkerMetrics
from streamapp.ops.server import OpsServer
from streamapp.pipeline import Pipeline, Scored
from streamapp.publish import Publisher
from streamapp.roles.head_updates import HeadFollower
from streamapp.serving.challenger import Shadow
from streamapp.serving.hotswap import ModelWatcher
from streamapp.settings import Settings

__all__ = ["RunSummary", "Worker"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunSummary:
    messages: int
    events_scored: int
    seconds: float


class Worker:
    """Consumes ``features`` + ``feedback``, runs the engine, publishes, checkpoints.

    The worker owns the lifecycle; the engine (:mod:`streamapp.engine`) owns the learning
    state, and delivery (:mod:`streamapp.checkpointing.delivery`) the offsets and
    transactions.

    ``run(count=, timeout=)`` bounds the loop, which makes it testable; without bounds it
    runs until SIGTERM/SIGINT (a second signal forces the exit).

    With ``processing_guarantee="exactly-once"`` outputs, input offsets and learning-state
    snapshots are committed in one transaction; on start, on assignment and after an aborted
    transaction the last snapshot is restored and the inputs after it are replayed without
    publishing (see :mod:`streamapp.checkpointing`).
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
        bundle = bundle or load_served_bundle(settings)
        self.codec = build_codec(settings, bundle)
        self.engine = Engine(settings, bundle)  # pipeline and challenger, restored as one
        batch = settings.batch
        self.policy = BatchPolicy(
            batch.max_size, batch.max_wait_ms / 1000.0, batch.idle_wait_ms / 1000.0
        )
        self.on_batch = on_batch
        self.fault_hook = fault_hook
        self.messages = 0
        self.busy_s = 0.0  # time spent decoding, scoring, learning and publishing
        # for /healthz: when the loop last committed something, or had nothing to do
        self.last_progress = time.monotonic()
        self._commits_seen = 0
        # the loop runs: run() sets it, stop() clears it; /healthz judges a running loop only
        self.running = False
        self._consumer: BatchConsumer | None = None
        self.delivery: AtLeastOnce | ExactlyOnce = make_delivery(settings, self.engine, fault_hook)
        self._started = False
        self._fenced = False
        self.metrics = WorkerMetrics(self)
        self.last_tick = time.monotonic()  # the poll loop's heartbeat, for /healthz
        self._publisher: Publisher | None = None
        self._server: OpsServer | None = None
        self._probe: BrokerProbe | None = None
        self._watcher: ModelWatcher | None = None
        self._heads: HeadFollower | None = None  # a scorer follows the learner's head
        # a schema registry that is away: the batch is read again after a backoff
        self.registry_hold = RegistryHold(settings.schema_registry.outage_limit_s)
        self._avro_outputs: AvroOutputs | None = None

    @property
    def bundle(self) -> Bundle:
        """The bundle served now."""
        return self.engine.bundle

    @property
    def pipeline(self) -> Pipeline:
        """The served bundle's pipeline (a restore or a swap replaces it)."""
        return self.engine.pipeline

    @property
    def shadow(self) -> Shadow | None:
        """The challenger, when one is configured."""
        return self.engine.shadow

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        validate_timing(s)
        check_access(s)  # one line now, not a retry loop later: login, ACLs
        self._check_copartitioning()
        check_mappings(self.codec)  # registry formats: the mapping fits, before consuming
        self._avro_outputs = avro_outputs(s, task=self.codec.task)  # their schemas registered
        self.delivery.start()  # exactly-once: restores the last snapshot into the engine
        publisher = self._make_publisher()
        self.attach(self._new_consumer(), publisher)
        self._started = True
        if s.role == "scorer":
            self._heads = HeadFollower(s, self.bundle.name, self.bundle.version)
        if s.model.registry is not None and s.model.name is not None:
            self._watcher = ModelWatcher(
                s, ModelRef(self.bundle.name, self.bundle.version), self.bundle.manifest.task
            )
        if s.http.enabled:
            self._probe = BrokerProbe(s)
            self._server = OpsServer(
                s.http.host, s.http.port, self.metrics.render, self.health, self.readiness
            )
            self._server.start()
        tune_garbage_collector()
        logger.info(
            "worker started: model %s %s, group %s, inputs %s, %s",
            self.bundle.name,
            self.bundle.version,
            s.kafka.group_id,
            s.topics.inputs(),
            s.delivery.processing_guarantee,
        )

    def attach(self, consumer: BatchConsumer, publisher: Publisher) -> None:
        """Read from ``consumer`` and publish through ``publisher``, and tell delivery of the
        consumer: what :meth:`start` does with the ones it builds from the settings (a caller
        that drives :meth:`step` itself may pass its own)."""
        self._publisher = publisher
        self._consumer = consumer
        self.delivery.attach(consumer)

    @property
    def http_port(self) -> int | None:
        """The port the ``/metrics``, ``/healthz`` and ``/readyz`` server listens on (the one
        the system chose for ``http.port`` 0); None while none runs."""
        return self._server.port if self._server is not None else None

    def _new_consumer(self) -> BatchConsumer:
        s = self.settings
        return BatchConsumer(
            consumer_config(s),
            s.topics.inputs(),
            on_assign=self.delivery.on_assign,
            on_revoke=self.delivery.on_revoke,
            on_lost=self.delivery.on_lost,
            max_idle_s=s.batch.align_max_idle_ms / 1000.0,
            strict_order=s.batch.align_strict,
            # a partition this far ahead of the others is paused; each pause costs a refetch
            max_buffered=10 * s.batch.max_size,
        )

    def _rejoin(self, fenced: ConsumerFencedError) -> None:
        """A static member fenced by itself (librdkafka rejoining after a coordinator
        failover) goes on with a new consumer of the same ``group.instance.id``; fenced by a
        newer instance (its producer fenced too), it stops."""
        if not self.delivery.still_owner(fenced):
            raise fenced
        old = self._consumer
        self._consumer = self._new_consumer()
        self.delivery.use_consumer(self._consumer)  # a recovery is due: revokes commit nothing
        if old is not None:
            try:
                old.close(join_timeout_s=0)
            except Exception as exc:  # a fatal consumer may refuse even that
                logger.debug("closing the fenced consumer: %s", exc)

    def stop(self) -> None:
        """Ask the loop to finish its batch and shut down gracefully."""
        self.running = False

    def run(
        self,
        *,
        count: int | None = None,
        timeout: float | None = None,
        until: Callable[[], bool] | None = None,
    ) -> RunSummary:
        """Process until stopped, or ``count`` input messages, or ``timeout`` seconds, or
        ``until()`` says so (checked before each turn)."""
        if not self._started:
            self.start()
        bounds = Bounds(count, timeout, until)
        scored_before = self.pipeline.stats.events_scored
        messages_before = self.messages
        self.running = True
        try:
            with ExitSignals(self.stop):
                while self.running and not bounds.reached(self.messages - messages_before):
                    self.last_tick = time.monotonic()
                    try:
                        self.step()
                    except DeliveryError as exc:
                        self.delivery.outputs_failed(exc)
                    except ConsumerFencedError as exc:
                        self._rejoin(exc)
                self.delivery.commit_final()
        except FencedError:
            self._fenced = True  # another instance owns our transactional.id now: write nothing
            logger.error(
                "fenced by a newer instance of %s: stopping", self.settings.transactional_id
            )
            raise
        return RunSummary(
            self.messages - messages_before,
            self.pipeline.stats.events_scored - scored_before,
            time.monotonic() - bounds.started,
        )

    def step(self) -> None:
        """One turn of the loop: poll, decode, score, publish the predictions, learn, publish
        the rest, store the offsets; commit when due. :meth:`run` turns it; the worker must be
        started, or given its parts by :meth:`attach`, first."""
        assert self._consumer is not None
        self._apply_model_updates()
        batch = self._consumer.poll_batch(self.policy)  # messages + their next offsets
        if self.delivery.recovery_required:
            self.delivery.recover()
            return
        if batch:
            began = time.perf_counter()
            publisher = self._publisher_required()
            try:
                decoded = self.codec.decode_batch(batch)  # events, feedback, dead letters
            except RegistryUnavailableError as exc:  # not bad input: read it again later
                self.registry_hold.held(batch.messages, self._consumer.unread, exc)
                self.delivery.commit_if_due()  # what was done before the outage commits
                # for /healthz, a batch held under the outage limit is progress: the hold's
                # own clock bounds the wait (past it, held() stops the worker with one line),
                # and a liveness restart would not help (the start's check needs a registry)
                self.last_progress = time.monotonic()
                return
            if self.registry_hold.down:
                self.registry_hold.resumed()
            live = self.delivery.live(batch)  # None, or which inputs a replay publishes
            scored = self.engine.score(decoded)  # one forward pass
            publisher.predictions(scored.predictions, live)  # predictions leave first
            self._observe_latencies(scored)
            outputs = self.engine.learn(scored)  # ledger, join, learn, drift
            publisher.rest(outputs, live)
            self.delivery.store(batch.offsets)
            self.engine.between_batches()
            self._observe(len(batch), began)
            if self.on_batch:
                self.on_batch(self, outputs)
        self.delivery.commit_if_due()
        self.note_progress()

    def note_progress(self) -> None:
        """Note the time for ``/healthz`` if the loop made progress since the last call: a
        commit, or nothing to do (nothing pending, nothing left to read). Each
        :meth:`step` ends with it."""
        assert self._consumer is not None
        commits = self.delivery.commits
        idle = not self.delivery.pending and not any(self._consumer.lag().values())
        if commits != self._commits_seen or idle:
            self._commits_seen = commits
            self.last_progress = time.monotonic()

    @property
    def recoveries(self) -> int:
        """How often the worker read again from its last commit."""
        return self.delivery.recoveries

    def close(self) -> None:
        """Commit what is done, then leave the group and flush the producer. With the broker
        away nothing is committed or flushed on the way out: the next start re-reads."""
        broker_away = self._started and self.delivery.outage.down_s > 0
        if self._started and not self._fenced and not broker_away:
            try:
                self._publish_final_report()
                self.delivery.commit_final()
            except Exception as exc:  # e.g. the broker went down: one line, not a traceback
                logger.warning(
                    "final commit failed (%s: %s); the uncommitted inputs will be re-read",
                    type(exc).__name__,
                    one_line(str(exc)),
                )
        if broker_away:
            self.delivery.hold_commits()  # the revoke in the consumer's close, too
        if self._consumer is not None:
            self._consumer.close()
        if self._started and not broker_away:
            try:
                self.delivery.flush()
            except DeliveryError as exc:
                logger.warning("outputs not flushed on the way out: %s", one_line(str(exc)))
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
        close_registry(self.codec)
        self._consumer = self._server = None
        self._started = False
        logger.info("worker stopped after %d messages", self.messages)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop's parts ------------------------------------------------------------------

    def _apply_model_updates(self) -> None:
        """Between two batches: a promoted bundle (not during a replay, which rebuilds the
        state of the bundle it started with), then the learner's newest head."""
        watcher = None if self.rebuilding else self._watcher
        if watcher is not None and (bundle := watcher.poll()) is not None:
            self._swap(bundle)
        if self._heads is not None and (head := self._heads.poll()) is not None:
            self.engine.load_head(head.head)
            logger.info("head updated to head_seq %d", head.head_seq)

    @property
    def rebuilding(self) -> bool:
        """Whether the state is still being rebuilt: no partitions yet, a recovery due, or a
        replay under way (a swap then would discard what the restore brought back)."""
        assigned = self._consumer is not None and bool(self._consumer.assignment)
        return not assigned or self.delivery.recovery_required or self.delivery.replaying

    def _make_publisher(self) -> Publisher:
        avro = self._avro_outputs
        return Publisher(
            self.delivery if avro is None else avro.sink(self.delivery),
            self.codec,
            self.settings.topics,
            self.bundle.name,
            self.bundle.version,
            publish_examples=self.settings.role == "scorer",
            shadow_model=self.shadow.model if self.shadow is not None else None,
        )

    def _swap(self, bundle: Bundle) -> None:
        """Serve ``bundle`` from the next batch on (called between batches)."""
        self._publish_final_report()  # the old bundle's last partial window, under its name
        old = self.bundle
        close_registry(self.codec)  # the new codec's readers fetch their schemas again
        self.codec = build_codec(self.settings, bundle)
        pending = self.engine.swap(bundle)  # counters and report_seq go on, pending labels not
        self._publisher = self._make_publisher()
        self.delivery.commit_final()  # a replay never crosses the swap
        logger.info(
            "now serving %s %s (was %s): %d events pending a label are dropped",
            bundle.name,
            bundle.version,
            old.version,
            pending,
        )

    def _observe_latencies(self, scored: Scored) -> None:
        """The predictions' latency, event time -> produced: measured as they leave, ahead of
        the batch's learning and drift work."""
        if scored.predictions is not None:
            self.metrics.observe_latencies(time.time() - scored.predictions.event_ts)

    def _observe(self, messages: int, began: float) -> None:
        elapsed = time.perf_counter() - began
        self.messages += messages
        self.busy_s += elapsed
        self.metrics.observe_batch(messages, elapsed)

    def _publish_final_report(self) -> None:
        """The last partial window's drift report, on the way out (also in a replay: the
        window holds only what no committed report counted)."""
        if (report := self.engine.final_report(time.time())) is None:
            return
        self._publisher_required().publish(Outputs(drift_reports=[report]))
        self.delivery.store_report()  # something to commit: in exactly-once, the report

    def _publisher_required(self) -> Publisher:
        assert self._publisher is not None, "start() the worker first"
        return self._publisher

    # -- what /metrics, /healthz and /readyz read (from the HTTP thread) ---------------------

    def model_info(self) -> dict[str, str]:
        s = self.settings
        return {
            "name": self.bundle.name,
            "version": self.bundle.version,
            "variant": s.model.variant,
            "device": s.model.device,
            "processing_guarantee": s.delivery.processing_guarantee,
        }

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        consumer = self._consumer
        return consumer.lag() if consumer is not None else {}

    def event_counts(self) -> dict[str, float]:
        counts: dict[str, float] = {
            "commits": self.delivery.commits,
            "transaction_aborts": self.delivery.aborts,
            "commit_seconds": self.delivery.commit_seconds,
        }
        if self._watcher is not None:
            counts["model_swaps"] = self._watcher.swaps
            counts["model_refusals"] = self._watcher.refusals
        return counts

    def last_drift_report(self) -> DriftReport | None:
        return self._publisher.last_report if self._publisher else None

    def health(self) -> dict[str, bool]:
        """Alive, the poll loop ticked within ``http.stall_s``, and it made progress within
        ``http.stall_s``: committed something, or had nothing to do (a loop that has input it
        cannot process or outputs it cannot commit is unhealthy)."""
        now, stall = time.monotonic(), self.settings.http.stall_s
        return {
            "alive": True,
            "loop_ticking": not (self.running and now - self.last_tick > stall),
            "making_progress": not (self.running and now - self.last_progress > stall),
        }

    def readiness(self) -> dict[str, bool]:
        consumer = self._consumer
        return {
            "model_loaded": self.pipeline is not None,
            "partitions_assigned": bool(consumer and consumer.assignment),
            "broker_reachable": bool(self._probe and self._probe.reachable()),
        }

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
