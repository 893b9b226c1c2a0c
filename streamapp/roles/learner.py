"""The learner role: learn from the scorers' training examples, publish head snapshots on
``model-updates`` (their format and follower: :mod:`streamapp.roles.head_updates`).

Scorers (``role=scorer``) score, keep the ledger, join labels and publish the joined
examples (the served embedding and the label) to ``training-examples``. One learner
consumes them, applies ``learn_many`` to the one global head and publishes a snapshot of it
to the compacted ``model-updates`` topic every ``learner.publish_every_examples`` examples
or ``learner.publish_interval_s`` seconds. A snapshot carries the example offsets it
reflects, in the same message: a restarted learner restores the latest snapshot and seeks
to those offsets (they win over the group's commits), so it replays exactly what the
snapshot does not include and ends with the head an uninterrupted run would have.
Every scorer follows ``model-updates`` with :class:`~streamapp.roles.head_updates.HeadFollower`
and swaps the head in between batches; predictions carry the ``head_seq`` they were scored
with.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streamapp.assembly import build_codec, build_embedder, build_head, load_served_bundle
from streamapp.codec import UnknownLabelError, dead_letter_key
from streamapp.events import DeadLetter, Reason, SourcePosition, position_of
from streamapp.kafka.config import consumer_config, producer_config
from streamapp.kafka.consumer import wait_for_join
from streamapp.kafka.producer import OutputProducer
from streamapp.lifecycle import Bounds, ExitSignals, tune_garbage_collector
from streamapp.model.bundle import Bundle
from streamapp.roles.head_updates import HeadSnapshot, read_latest_head
from streamapp.settings import Settings

__all__ = ["Learner"]

logger = logging.getLogger(__name__)


class Learner:
    """Consumes ``training-examples``, learns, publishes head snapshots.

    ``run(count=, timeout=)`` bounds the loop like the worker's; SIGTERM/SIGINT stop it after
    a last snapshot.
    """

    def __init__(self, settings: Settings, bundle: Bundle | None = None) -> None:
        self.settings = settings
        self.bundle = bundle or load_served_bundle(settings)
        self.codec = build_codec(settings, self.bundle)
        self.head = build_head(settings, self.bundle)
        self.dim = build_embedder(settings, self.bundle)[1]  # what the scorers' ledgers keep
        self.offsets: dict[tuple[str, int], int] = {}
        self.snapshots = 0
        self.dead_letters = 0
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        self._running = False
        self._consumer: Consumer | None = None
        self._joined = False  # the group has served the first assignment
        self._producer: OutputProducer | None = None

    def start(self) -> None:
        s = self.settings
        restored = read_latest_head(s, self.bundle.name)
        if restored is not None and restored.model_version == self.bundle.version:
            self.head.load_state_dict(restored.head)
            self.offsets = dict(restored.offsets)
            logger.info("restored head_seq %d, resuming at %s", restored.head_seq, self.offsets)
        self._producer = OutputProducer(producer_config(s))
        # a static member: a restarted learner takes its place at once, no session timeout
        config = {
            **consumer_config(s),
            "group.id": f"{s.kafka.group_id}-learner",
            "group.instance.id": f"{s.delivery.instance_id}-learner",
        }
        self._consumer = Consumer(config)
        self._consumer.subscribe([s.topics.training_examples], on_assign=self._on_assign)
        tune_garbage_collector()
        logger.info(
            "learner started: %s %s from head_seq %d",
            self.bundle.name,
            self.bundle.version,
            self.head.n_learned,
        )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # the snapshot's offsets win: it holds exactly the examples before them
        self._joined = True
        for tp in partitions:
            if (tp.topic, tp.partition) in self.offsets:
                tp.offset = self.offsets[(tp.topic, tp.partition)]
        consumer.assign(partitions)

    def stop(self) -> None:
        self._running = False

    def run(self, *, count: int | None = None, timeout: float | None = None) -> int:
        """Learn until stopped, ``count`` examples, or ``timeout`` seconds; returns examples."""
        if self._consumer is None:
            self.start()
        assert self._consumer is not None
        bounds, learned = Bounds(count, timeout), 0
        batch = self.settings.batch
        self._running = True
        with ExitSignals(self.stop, "taking a last snapshot"):
            while self._running and not bounds.reached(learned):
                messages = self._consumer.consume(batch.max_size, batch.idle_wait_ms / 1000.0)
                learned += self._learn([m for m in messages if m.error() is None])
                if self._snapshot_due():
                    self.snapshot()
            self.snapshot()
        return learned

    def _learn(self, messages: list[Any]) -> int:
        if not messages:
            return 0
        for msg in messages:
            topic, partition, offset = position_of(msg)
            self.offsets[(topic, partition)] = offset + 1
        X, y, refused = self.codec.decode_training_examples([m.value() for m in messages], self.dim)
        for index, why in refused:
            unknown = isinstance(why, UnknownLabelError)
            self._dead_letter(
                messages[index], Reason.UNKNOWN_LABEL if unknown else Reason.SCHEMA, str(why)
            )
        if len(y):
            self.head.learn_many(X, y)
            self._since_snapshot += len(y)
        return len(y)

    def _dead_letter(self, msg: Any, reason: Reason, why: str) -> None:
        assert self._producer is not None
        source = SourcePosition.of(msg)
        dead = DeadLetter(source, msg.key(), reason, why, msg.value())
        self._producer.produce(
            self.settings.topics.dead_letter,
            self.codec.encode_dead_letter(dead),
            dead_letter_key(msg.key()),
        )
        self.dead_letters += 1
        logger.warning(
            "dead-lettered %s[%d]@%d: %s", source.topic, source.partition, source.offset, why
        )

    def _snapshot_due(self) -> bool:
        ls = self.settings.learner
        if self._since_snapshot >= ls.publish_every_examples:
            return True
        return (
            self._since_snapshot > 0
            and time.monotonic() - self._last_snapshot >= ls.publish_interval_s
        )

    def snapshot(self) -> None:
        """Publish the head with the offsets it reflects, then commit those offsets."""
        assert self._producer is not None and self._consumer is not None
        if not self.offsets:
            return
        snapshot = HeadSnapshot(
            self.bundle.name,
            self.bundle.version,
            self.head.n_learned,
            self.head.state_dict(),
            dict(self.offsets),
            time.time(),
        )
        self._producer.produce(
            self.settings.topics.model_updates, snapshot.encode(), self.bundle.name.encode()
        )
        self._producer.flush()
        try:
            self._consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in self.offsets.items()],
                asynchronous=False,
            )
        except KafkaException as exc:  # the snapshot holds the offsets; commits are a hint
            logger.info("offset commit deferred: %s", exc)
        self.snapshots += 1
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        logger.info("published head_seq %d", snapshot.head_seq)

    def close(self) -> None:
        if self._consumer is not None:
            wait_for_join(self._consumer, lambda: self._joined)
            self._consumer.close()
        if self._producer is not None:
            self._producer.flush()
        self._consumer = self._producer = None
