"""Where the worker's CPU goes per event, in process: no broker, no client threads, no other
loop on the cores. The same records as the throughput suite's backlog (events and their
labels, in event-time order) go in batches of ``batch.max_size`` messages through the minimal
loop's work (parse, one forward pass, a small record per event) and through the worker's
(decode with validation; score; the ledger, learning and drift after the predictions left;
encode the predictions). Thread CPU per part, medians of alternating rounds: what the
throughput suite's ratios would be if Kafka cost nothing.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson

from streamapp.assembly import build_codec, build_pipeline, load_served_bundle
from streamapp.bench.common import SCENARIO, run_order
from streamapp.bench.loops import SourceModel, prediction_records
from streamapp.codec import encode_json
from streamapp.scenarios import get_scenario, stream
from streamapp.settings import Settings

__all__ = ["InputRecord", "backlog_records", "measure_profile"]

logger = logging.getLogger(__name__)

MINIMAL_PARTS = ("parse", "score", "encode")
WORKER_PARTS = ("decode", "score", "ledger, learning and drift", "encode")


@dataclass(frozen=True, slots=True)
class InputRecord:
    """What the codec reads of a consumed Kafka message."""

    _topic: str
    _offset: int
    _key: bytes
    _value: bytes
    _timestamp_ms: int

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._timestamp_ms)  # 1: the producer's create time


def backlog_records(settings: Settings, events: int) -> list[InputRecord]:
    """The throughput suite's backlog as records on ``settings``' input topics (one
    partition each), in event-time order as the worker's merger releases them."""
    topics = {"features": settings.topics.features, "feedback": settings.topics.feedback}
    offsets = dict.fromkeys(topics, 0)
    records = []
    for record in stream(get_scenario(SCENARIO), events, rate=2000, label_delay_s=1.0):
        records.append(
            InputRecord(
                topics[record.kind],
                offsets[record.kind],
                record.key.encode(),
                encode_json(record.value),
                int(record.ts * 1000),
            )
        )
        offsets[record.kind] += 1
    return records


class _Clock:
    """Thread CPU per named part, in µs, summed over a round; ``predictions`` made in it."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.predictions = 0
        self._last = time.thread_time()

    def lap(self, part: str) -> None:
        now = time.thread_time()
        self.parts[part] = self.parts.get(part, 0.0) + (now - self._last) * 1e6
        self._last = now


def _minimal_round(model: SourceModel, features: str, batches: list[list[InputRecord]]) -> _Clock:
    """The minimal batched loop's work (``streamapp.bench.loops.minimal_loop``) minus Kafka."""
    clock = _Clock()
    for batch in batches:
        events = [m for m in batch if m.topic() == features]
        docs = [orjson.loads(m.value()) for m in events]
        clock.lap("parse")
        labels = model.labels([d["features"] for d in docs]) if docs else []
        clock.lap("score")
        clock.predictions += len(prediction_records(docs, labels))
        clock.lap("encode")
    return clock


def _worker_round(settings: Settings, batches: list[list[InputRecord]]) -> _Clock:
    """The worker's per-batch work (``Worker.step``) minus Kafka, on fresh state."""
    bundle = load_served_bundle(settings)
    codec, pipeline = build_codec(settings, bundle), build_pipeline(settings, bundle)
    clock = _Clock()
    for batch in batches:
        decoded = codec.decode_batch(batch)
        clock.lap("decode")
        scored = pipeline.score(decoded)
        predictions = scored.predictions
        if predictions is not None:
            clock.lap("score")  # the worker produces them here, before the batch's learning
            clock.predictions += len(predictions)
        pipeline.learn(scored)
        clock.lap("ledger, learning and drift")
        if predictions is not None:
            codec.encode_predictions(predictions, bundle.name, bundle.version)
        clock.lap("encode")
    return clock


def measure_profile(settings: Settings, events: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    """µs of CPU per event (each with its label) by part, for the minimal loop's work and
    the worker's, rounds alternating; ``minimal_over_worker`` is the ratio of their totals:
    the worker's rate over the minimal loop's, were Kafka free."""
    records = backlog_records(settings, events)
    size = settings.batch.max_size
    batches = [records[i : i + size] for i in range(0, len(records), size)]
    model = SourceModel(settings)
    runs: dict[str, list[dict[str, float]]] = {"minimal": [], "worker": []}
    predictions: dict[str, int] = {}
    loops: dict[str, Callable[[], _Clock]] = {
        "minimal": lambda: _minimal_round(model, settings.topics.features, batches),
        "worker": lambda: _worker_round(settings, batches),
    }
    for name in run_order(list(loops), set(loops), rounds):  # A B B A ...
        clock = loops[name]()
        runs[name].append({part: us / events for part, us in clock.parts.items()})
        predictions[name] = clock.predictions
    minimal = _medians(runs["minimal"], MINIMAL_PARTS)
    worker = _medians(runs["worker"], WORKER_PARTS)
    logger.info("in-process CPU per event: minimal %s, worker %s", minimal, worker)
    return {
        "events": events,
        "batch_messages": size,
        "rounds": rounds,
        "minimal_us_per_event": minimal,
        "worker_us_per_event": worker,
        "minimal_over_worker": round(minimal["total"] / worker["total"], 3),
        "predictions": predictions,  # of each loop's last round: every event, for both
    }


def _medians(runs: list[dict[str, float]], parts: tuple[str, ...]) -> dict[str, float]:
    """Each part's median over the runs, and the median of the runs' totals.

    >>> _medians([{"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 2.0}, {"a": 2.0, "b": 9.0}], ("a", "b"))
    {'a': 2.0, 'b': 2.0, 'total': 5.0}
    """
    medians = {
        part: round(statistics.median(run.get(part, 0.0) for run in runs), 2) for part in parts
    }
    medians["total"] = round(statistics.median(sum(run.values()) for run in runs), 2)
    return medians
