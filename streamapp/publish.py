"""Outputs of a processed batch onto the output topics: predictions, dead letters, drift.

Shared by both runtimes (the confluent-kafka worker and the Faust agents), so what a
consumer of ``predictions`` or ``dead-letter`` sees does not depend on the runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Protocol

import numpy as np

from streamapp.codec import Codec, dead_letter_key, encode_json
from streamapp.drift.report import DriftReport
from streamapp.events import DeadLetter, Outputs, PredictionBlock, SourcePosition
from streamapp.ops.logs import at
from streamapp.settings import TopicNames

__all__ = ["Publisher"]

logger = logging.getLogger(__name__)

_LOGGED_PER_BATCH = 10  # a flood of bad input is summarized, not logged line by line


class _Sink(Protocol):
    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...
    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None: ...


class Publisher:
    """Encodes and produces one batch's :class:`~streamapp.events.Outputs`."""

    def __init__(
        self,
        sink: _Sink,
        codec: Codec,
        topics: TopicNames,
        model_name: str,
        model_version: str,
        *,
        publish_examples: bool = False,
        shadow_model: tuple[str, str] | None = None,
    ) -> None:
        self.sink = sink
        self.codec = codec
        self.topics = topics
        self.model_name = model_name
        self.model_version = model_version
        self.last_report: DriftReport | None = None
        self.publish_examples = publish_examples  # a scorer's joined examples go to the learner
        self.shadow_model = shadow_model  # the challenger's name and version, if one runs

    def publish(
        self, outputs: Outputs, is_live: Callable[[SourcePosition], bool] | None = None
    ) -> None:
        """Produce ``outputs``, the predictions first (:meth:`predictions`, then
        :meth:`rest`); with ``is_live``, only what comes from live (not replayed) inputs."""
        self.predictions(outputs.predictions, is_live)
        self.rest(outputs, is_live)

    def rest(
        self, outputs: Outputs, is_live: Callable[[SourcePosition], bool] | None = None
    ) -> None:
        """Produce all of ``outputs`` but the model's predictions, which left first
        (:meth:`predictions`, ahead of the batch's learning work): the challenger's
        predictions, training examples, dead letters, drift reports. ``is_live`` as in
        :meth:`publish`; drift reports always: a replay makes none of those that went out
        before (the monitor resumes after the last committed one), so any it makes is new."""
        topics = self.topics
        dead_letters = outputs.dead_letters
        if is_live is not None:
            dead_letters = [d for d in dead_letters if is_live(d.source)]
        if self.shadow_model is not None:
            shadow = outputs.shadow_predictions
            self._predictions(topics.shadow_predictions, shadow, self.shadow_model, is_live)
        examples = outputs.joined if self.publish_examples else None
        if examples is not None and is_live is not None:
            live = [s is None or is_live(s) for s in examples.sources]
            examples = examples.select(np.array(live, bool))
        if examples is not None and len(examples):
            records = self.codec.encode_training_examples(
                examples, self.model_name, self.model_version
            )
            self.sink.produce_many(topics.training_examples, records)
        for dead in dead_letters:
            # bounded by the codec (payload, message, key), so it always fits the producer
            value = self.codec.encode_dead_letter(dead)
            self.sink.produce(topics.dead_letter, value, dead_letter_key(dead.key))
        _log_dead_letters(dead_letters)
        for report in outputs.drift_reports:
            self.last_report = report
            self.sink.produce(topics.drift, encode_json(report), self.model_name.encode())
            logger.info(
                "drift report %d: %d events, drifted share %.2f, accuracy %s",
                report["report_seq"],
                report["window"]["events"],
                report["dataset"]["drifted_share"],
                report["performance"].get("accuracy"),
            )

    def predictions(
        self,
        predictions: PredictionBlock | None,
        is_live: Callable[[SourcePosition], bool] | None = None,
    ) -> None:
        """Produce the model's predictions alone (``is_live`` as in :meth:`publish`)."""
        model = (self.model_name, self.model_version)
        self._predictions(self.topics.predictions, predictions, model, is_live)

    def _predictions(
        self,
        topic: str,
        predictions: PredictionBlock | None,
        model: tuple[str, str],
        is_live: Callable[[SourcePosition], bool] | None,
    ) -> None:
        if predictions is not None and is_live is not None:
            live = np.fromiter((is_live(s) for s in predictions.sources), bool)
            predictions = predictions.select(live)
        if predictions is not None and len(predictions):
            self.sink.produce_many(topic, self.codec.encode_predictions(predictions, *model))


def _log_dead_letters(dead_letters: list[DeadLetter]) -> None:
    for dead in dead_letters[:_LOGGED_PER_BATCH]:
        where = dead.source
        logger.warning(
            "dead-lettered %s[%d]@%d (%s): %s",
            where.topic,
            where.partition,
            where.offset,
            dead.reason.value,
            dead.message,
            extra=at(where.topic, where.partition, where.offset, reason=dead.reason.value),
        )
    if len(dead_letters) > _LOGGED_PER_BATCH:
        logger.warning(
            "and %d more dead letters in this batch", len(dead_letters) - _LOGGED_PER_BATCH
        )
