"""Producing a scenario's, or a data file's, events and delayed feedback to a cluster."""

from __future__ import annotations

import heapq
import logging
import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING

import numpy as np
from confluent_kafka import Producer

from streamapp.codec import encode_json
from streamapp.kafka.config import producer_config
from streamapp.scenarios.base import Record
from streamapp.settings import Settings

if TYPE_CHECKING:
    from streamapp.datasets import Table

__all__ = ["label_value", "produce_records", "table_records"]

logger = logging.getLogger(__name__)


def produce_records(
    settings: Settings,
    records: Iterable[Record],
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
    encode: Callable[[Record, str], bytes] | None = None,
) -> int:
    """Produce ``records`` to the features/feedback topics with their event times as Kafka
    timestamps; with ``realtime`` they are paced at their timestamps' rate. ``encode(record,
    topic)`` writes a value (default: streamapp's JSON). Returns the count."""
    producer = Producer(producer_config(settings, **{"linger.ms": 20}))
    topics = {"features": settings.topics.features, "feedback": settings.topics.feedback}
    sent = 0
    first_ts: float | None = None
    started = time.monotonic()
    for record in records:
        if stop is not None and stop.is_set():
            break
        if realtime:
            first_ts = record.ts if first_ts is None else first_ts
            delay = (record.ts - first_ts) - (time.monotonic() - started)
            if delay > 0:
                time.sleep(delay)
        while True:
            try:
                topic = topics[record.kind]
                producer.produce(
                    topic,
                    encode_json(record.value) if encode is None else encode(record, topic),
                    record.key.encode(),
                    timestamp=int(record.ts * 1000),
                )
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        if sent % 1000 == 0:
            producer.poll(0)
    remaining = producer.flush(30)
    if remaining:
        raise RuntimeError(f"{remaining} scenario records were not delivered")
    logger.info("produced %d records", sent)
    return sent


def table_records(
    table: Table,
    *,
    rate: float = 1000.0,
    label_delay_s: float = 2.0,
    label_fraction: float = 1.0,
    start_ts: float | None = None,
    seed: int = 0,
    id_prefix: str = "e",
) -> Iterator[Record]:
    """A data file's rows as feature events, each labeled (with probability
    ``label_fraction``) after a delay drawn uniformly from ``[0.5, 1.5] * label_delay_s``.

    Event ids come from the table's id column (else ``id_prefix`` + row number), event times
    from its timestamp column (else ``start_ts`` + row / ``rate``; default start: now).
    Records come out in timestamp order; a missing value is sent as ``null``. Feedback carries
    the class name, or for a regression table the target as a JSON number. Features go by
    name (``{name: value}``) when the file named them, else as a list in column order.

    >>> from streamapp.datasets import Table
    >>> t = Table(np.array([[1.0], [np.nan]]), np.array([0, 1]), ["x"], ["a", "b"])
    >>> [(r.kind, r.value.get("features"), r.value.get("label"))
    ...  for r in table_records(t, rate=10, label_delay_s=0.01, start_ts=0)]
    [('features', [1.0], None), ('feedback', None, 'a'), ('features', [None], None), \
('feedback', None, 'b')]
    >>> named = Table(np.array([[1.0, 2.0]]), np.array([0]), ["x", "y"], ["a"], named=True)
    >>> next(table_records(named, start_ts=0)).value["features"]
    {'x': 1.0, 'y': 2.0}
    """
    start_ts = time.time() if start_ts is None else start_ts
    n = len(table)
    rng = np.random.default_rng(seed)
    labeled = rng.random(n) < label_fraction
    delays = label_delay_s * rng.uniform(0.5, 1.5, n)
    times = table.ts if table.ts is not None else start_ts + np.arange(n) / rate
    ids = table.ids if table.ids is not None else [f"{id_prefix}{i}" for i in range(n)]
    pending: list[tuple[float, int, Record]] = []
    for i in np.argsort(times, kind="stable"):
        ts = float(times[i])
        while pending and pending[0][0] <= ts:
            yield heapq.heappop(pending)[2]
        values = [None if math.isnan(v) else v for v in table.X[i].tolist()]
        features = dict(zip(table.feature_names, values, strict=True)) if table.named else values
        event = {"event_id": ids[i], "ts": ts, "features": features}
        yield Record("features", ids[i], event, ts)
        if labeled[i]:
            label_ts = ts + float(delays[i])
            label = label_value(table, int(i))
            feedback = {"event_id": ids[i], "label": label, "ts": label_ts}
            heapq.heappush(
                pending, (label_ts, int(i), Record("feedback", ids[i], feedback, label_ts))
            )
    while pending:
        yield heapq.heappop(pending)[2]


def label_value(table: Table, i: int) -> str | float:
    """Row ``i``'s feedback label: its class name, or its numeric target (regression).

    >>> from streamapp.datasets import Table
    >>> label_value(Table(np.zeros((1, 1)), np.array([2.5]), ["x"], [], task="regression"), 0)
    2.5
    """
    if table.task == "regression":
        return float(table.y[i])
    return table.classes[int(table.y[i])]
