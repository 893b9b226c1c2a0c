"""The latency reference for two hops: a plain relay, ``features`` -> ``predictions``.

It does the least a consume -> produce service can do: forwards each feature event's bytes
as they come (no decoding, batching, model or state) and commits its offsets every second
after flushing, as the worker does at least once. Through it, the latency suite measures what
two hops cost on this broker and machine under the same load as the worker, tail included.

Run as ``python -m streamapp.bench.relay`` with the worker's ``STREAMAPP_*`` variables;
it runs until it is terminated.
"""

from __future__ import annotations

import logging
import signal
import time
from types import FrameType

from confluent_kafka import Consumer, Producer, TopicPartition

from streamapp.kafka.config import consumer_config, producer_config
from streamapp.settings import Settings

__all__ = ["relay"]

logger = logging.getLogger(__name__)

COMMIT_INTERVAL_S = 1.0
_MAX_BATCH = 500


def relay(settings: Settings, stop: list[bool]) -> None:
    """Forward ``settings.topics.features`` to ``predictions`` until ``stop[0]`` is set."""
    consumer = Consumer(consumer_config(settings))
    consumer.subscribe([settings.topics.features])
    producer = Producer(producer_config(settings))
    out = settings.topics.predictions
    offsets: dict[tuple[str, int], int] = {}
    committed = time.monotonic()
    try:
        while not stop[0]:
            first = consumer.poll(0.1)  # returns on the first message; the rest without waiting
            batch = [first, *consumer.consume(_MAX_BATCH - 1, 0)] if first is not None else []
            for msg in batch:
                if msg.error() is None:
                    producer.produce(out, msg.value(), msg.key())
                    offsets[(msg.topic(), msg.partition())] = msg.offset() + 1
            producer.poll(0)
            if offsets and time.monotonic() - committed >= COMMIT_INTERVAL_S:
                producer.flush()
                consumer.commit(
                    offsets=[TopicPartition(t, p, o) for (t, p), o in offsets.items()],
                    asynchronous=False,
                )
                offsets.clear()
                committed = time.monotonic()
    finally:
        producer.flush(10)
        consumer.close()


def main() -> None:
    stop = [False]

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop[0] = True

    signal.signal(signal.SIGTERM, on_term)
    relay(Settings(), stop)


if __name__ == "__main__":
    main()
