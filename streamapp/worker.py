"""The worker's lifecycle: startup, the poll loop, rebalances, graceful shutdown. No ML here."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

import numpy as np
import torch
from confluent_kafka import TopicPartition

from streamapp.batching import BatchPolicy
from streamapp.checkpoint import Checkpoint
from streamapp.codec import Codec, encode_dead_letter, encode_json
from streamapp.drift.monitor import DriftMonitor
from streamapp.events import Outputs
from streamapp.kafka.admin import partition_counts
from streamapp.kafka.config import consumer_config, producer_config
from streamapp.kafka.consumer import BatchConsumer
from streamapp.kafka.producer import OutputProducer
from streamapp.ledger import PendingLedger
from streamapp.model.backbone import Embedder
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.head import make_head
from streamapp.pipeline import Pipeline
from streamapp.settings import Settings

__all__ = ["RunSummary", "Worker", "build_pipeline"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RunSummary:
    messages: int
    events_scored: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events_scored / self.seconds if self.seconds > 0 else 0.0


def build_pipeline(settings: Settings, bundle: Bundle) -> Pipeline:
    """The pipeline for ``bundle`` as ``settings`` configure it."""
    m = bundle.manifest
    head_cfg = settings.head
    head = make_head(
        head_cfg.kind,
        bundle.head_coef,
        bundle.head_intercept,
        m.classes,
        learning_rate=head_cfg.learning_rate,
        eta0=head_cfg.eta0,
        alpha=head_cfg.alpha,
        seed=head_cfg.seed,
    )
    embed = Embedder(
        bundle.backbone,
        np.asarray(m.preprocessing["mean"]),
        np.asarray(m.preprocessing["std"]),
        device=settings.device,
    )
    ledger = PendingLedger(
        settings.ledger.max_entries,
        m.embedding_dim,
        len(m.classes),
        settings.ledger.ttl_s,
        settings.ledger.early_label_ttl_s,
    )
    d = settings.drift
    monitor = DriftMonitor(
        bundle.reference,
        m.feature_names,
        m.classes,
        window_events=d.window_events,
        interval_s=d.interval_s,
        min_events=d.min_events,
        alpha=d.alpha,
        dataset_drift_share=d.dataset_drift_share,
        performance_window=d.performance_window,
    )
    return Pipeline(
        embed,
        head,
        bundle.head_coef,
        bundle.head_intercept,
        ledger,
        monitor,
        model_name=m.name,
        model_version=m.version,
    )


class Worker:
    """Consumes ``features`` + ``feedback``, runs the pipeline, publishes, checkpoints.

    ``run(count=, timeout=)`` bounds the loop, which makes it testable; without bounds it
    runs until SIGTERM/SIGINT (a second signal forces the exit).
    """

    def __init__(
        self,
        settings: Settings,
        bundle: Bundle | None = None,
        *,
        on_batch: Callable[[Worker, Outputs], None] | None = None,
    ) -> None:
        self.settings = settings
        self.bundle = bundle or load_bundle(settings.bundle)
        m = self.bundle.manifest
        if settings.torch_threads:
            torch.set_num_threads(settings.torch_threads)
        self.codec = Codec(
            m.feature_names,
            m.classes,
            features_topic=settings.topics.features,
            feedback_topic=settings.topics.feedback,
            max_abs_value=settings.max_abs_value,
            max_payload_bytes=settings.max_payload_bytes,
        )
        self.pipeline = build_pipeline(settings, self.bundle)
        self.policy = BatchPolicy(settings.batch.max_size, settings.batch.max_wait_ms / 1000.0)
        self.on_batch = on_batch
        self.messages = 0
        self.busy_s = 0.0  # time spent decoding, scoring, learning and publishing
        self._running = False
        self._stopping = False
        self._consumer: BatchConsumer | None = None
        self._producer: OutputProducer | None = None
        self._checkpoint: Checkpoint | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        s = self.settings
        self._check_copartitioning()
        self._producer = OutputProducer(producer_config(s))
        self._consumer = BatchConsumer(
            consumer_config(s),
            s.topics.inputs(),
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        self._checkpoint = Checkpoint(self._consumer, self._producer, s.commit_interval_ms / 1000.0)
        logger.info(
            "worker started: model %s %s, group %s, inputs %s",
            self.bundle.name,
            self.bundle.version,
            s.group_id,
            s.topics.inputs(),
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
                messages = self._consumer.poll_batch(self.policy)
                if messages:
                    began = time.perf_counter()
                    decoded = self.codec.decode_batch(messages)
                    outputs = self.pipeline.process(decoded)
                    self._publish(outputs)
                    self._checkpoint.store(decoded.offsets)
                    self.messages += len(messages)
                    self.busy_s += time.perf_counter() - began
                    if self.on_batch:
                        self.on_batch(self, outputs)
                self._checkpoint.commit_if_due()
                if count is not None and self.messages - messages_before >= count:
                    break
                if timeout is not None and time.monotonic() - started >= timeout:
                    break
            self._checkpoint.commit()
        finally:
            restore()
        return RunSummary(
            self.messages - messages_before,
            self.pipeline.stats.events_scored - scored_before,
            time.monotonic() - started,
        )

    def close(self) -> None:
        """Commit what is done, then leave the group and flush the producer."""
        if self._checkpoint is not None:
            try:
                self._checkpoint.commit()
            except Exception:
                logger.exception("final commit failed; the uncommitted inputs will be re-read")
        if self._consumer is not None:
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush()
        self._consumer = self._producer = self._checkpoint = None
        logger.info("worker stopped after %d messages", self.messages)

    def __enter__(self) -> Worker:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the loop's parts ------------------------------------------------------------------

    def _publish(self, outputs: Outputs) -> None:
        assert self._producer is not None
        topics = self.settings.topics
        if outputs.predictions is not None:
            records = self.codec.encode_predictions(
                outputs.predictions, self.bundle.name, self.bundle.version
            )
            self._producer.produce_many(topics.predictions, records)
        for dead in outputs.dead_letters:
            self._producer.produce(topics.dead_letter, encode_dead_letter(dead), dead.key)
        for report in outputs.drift_reports:
            self._producer.produce(topics.drift, encode_json(report), self.bundle.name.encode())
            logger.info(
                "drift report %d: %d events, drifted share %.2f, accuracy %s",
                report["report_seq"],
                report["window"]["events"],
                report["dataset"]["drifted_share"],
                report["performance"].get("accuracy"),
            )

    def _on_revoke(self, partitions: list[TopicPartition]) -> None:
        # commit what is done before the partitions go to another worker
        if self._checkpoint is not None:
            self._checkpoint.commit(only=[(tp.topic, tp.partition) for tp in partitions])

    def _on_lost(self, partitions: list[TopicPartition]) -> None:
        if self._checkpoint is not None:
            self._checkpoint.forget((tp.topic, tp.partition) for tp in partitions)

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
            for sig, handler in previous.items():
                signal.signal(sig, handler)

        return restore
