"""Producing a scenario's events and delayed feedback to a cluster."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable

from confluent_kafka import Producer

from streamapp.codec import encode_json
from streamapp.kafka.config import producer_config
from streamapp.scenarios.base import Record
from streamapp.settings import Settings

__all__ = ["produce_records"]

logger = logging.getLogger(__name__)


def produce_records(
    settings: Settings,
    records: Iterable[Record],
    *,
    realtime: bool = False,
    stop: threading.Event | None = None,
) -> int:
    """Produce ``records`` to the features/feedback topics with their event times as Kafka
    timestamps; with ``realtime`` they are paced at their timestamps' rate. Returns the count."""
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
                producer.produce(
                    topics[record.kind],
                    encode_json(record.value),
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
