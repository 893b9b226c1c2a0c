"""The latency reference for two hops: a plain relay, ``features`` -> ``predictions``.

It does the least a consume -> produce service can do: forwards each feature event's bytes
as they come, with no decoding, batching, model, state or commits (nothing in it ever
blocks). Through it, the latency suite measures what two hops cost on this broker and
machine under the same load as the worker, tail included.

Run as ``python -m streamapp.bench.relay`` with the worker's ``STREAMAPP_*`` variables; it
runs until it is terminated.
"""

from __future__ import annotations

import logging
import signal
import threading
from types import FrameType

from confluent_kafka import Consumer, Producer

from streamapp.kafka.config import consumer_config, producer_config
from streamapp.settings import Settings

__all__ = ["relay"]

logger = logging.getLogger(__name__)

_MAX_BATCH = 500


def relay(settings: Settings, stop: threading.Event) -> None:
    """Forward ``settings.topics.features`` to ``settings.topics.predictions`` until ``stop``."""
    consumer = Consumer(consumer_config(settings))
    consumer.subscribe([settings.topics.features])
    producer = Producer(producer_config(settings))
    out = settings.topics.predictions
    try:
        while not stop.is_set():
            first = consumer.poll(0.1)  # returns on the first message; the rest without waiting
            batch = [first, *consumer.consume(_MAX_BATCH - 1, 0)] if first is not None else []
            for msg in batch:
                if msg.error() is None:
                    producer.produce(out, msg.value(), msg.key())
            producer.poll(0)
    finally:
        producer.flush(10)
        consumer.close()


def main() -> None:
    stop = threading.Event()

    def on_term(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    relay(Settings(), stop)


if __name__ == "__main__":
    main()
