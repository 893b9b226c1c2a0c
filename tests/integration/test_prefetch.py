"""librdkafka prefetches a bounded queue per partition, not a whole backlog (its default is
64 MB), and sends no fetch while that queue is full.

noida-db answers a fetch with everything it has, whatever ``fetch.max.bytes`` says, and answers
a fetch at the end of a partition at once (no ``fetch.wait.max.ms``): an unbounded queue keeps
fetching empty responses, ~12,000 a second, while the worker is busy with the backlog."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from streamapp.kafka.config import PREFETCH_KBYTES, consumer_config
from streamapp.settings import Settings

BACKLOG_BYTES = 12 * 1024 * 1024


def _fetches(stats: dict[str, Any]) -> int:
    return sum((broker.get("req") or {}).get("Fetch", 0) for broker in stats["brokers"].values())


def test_a_consumer_with_a_full_prefetch_queue_stops_fetching(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings()
    topic, value = settings.topics.features, b"x" * 2048
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers, "linger.ms": 20})
    for _ in range(BACKLOG_BYTES // len(value)):
        producer.produce(topic, value, partition=0)
        producer.poll(0)
    assert producer.flush(60) == 0

    stats: list[dict[str, Any]] = []
    config = {k: v for k, v in consumer_config(settings).items() if k != "logger"}
    consumer = Consumer(
        {**config, "statistics.interval.ms": 100, "stats_cb": lambda s: stats.append(json.loads(s))}
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    try:
        taken = 0
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline:
            taken += len(consumer.consume(1, 0.1))
            time.sleep(0.1)  # a slow reader: the queue stays full
    finally:
        consumer.close()

    queued = [s["topics"][topic]["partitions"]["0"]["fetchq_size"] for s in stats]
    full = [s for s, size in zip(stats, queued, strict=True) if size > PREFETCH_KBYTES * 1024]
    assert 0 < taken < 100 and len(full) >= 10  # a slow reader, a queue full most of the time
    # unbounded, noida-db is asked ~12,000 times a second; a real broker waits on each ask
    assert _fetches(full[-1]) - _fetches(full[0]) < 50
