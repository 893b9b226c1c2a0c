"""The output producer: delivery errors are saved in the callback and raised on the next
``produce`` or ``flush``, so a lost output can never be followed by a committed offset."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from streamapp.errors import DeliveryError

__all__ = ["OutputProducer"]

logger = logging.getLogger(__name__)


class _FirstError:
    """The delivery callback: keeps the first failure (a separate object, so the producer
    and its owner form no reference cycle and librdkafka is released promptly)."""

    __slots__ = ("error", "topic")

    def __init__(self) -> None:
        self.error: KafkaError | None = None
        self.topic: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.error is None:
            self.error, self.topic = err, msg.topic()


class OutputProducer:
    """``produce`` never blocks forever and never drops: a full queue is drained first."""

    def __init__(self, config: dict[str, Any]) -> None:
        self._failed = _FirstError()
        # one global delivery callback instead of a callback object per message
        self._producer = Producer({**config, "on_delivery": self._failed})

    def _raise_if_failed(self) -> None:
        failed = self._failed
        if failed.error is not None:
            err, topic, failed.error = failed.error, failed.topic, None
            raise DeliveryError(f"delivery to {topic} failed: {err}")

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self._raise_if_failed()
        while True:
            try:
                self._producer.produce(topic, value, key)
                return
            except BufferError:
                self._producer.poll(0.05)  # queue full: serve delivery reports, then retry

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        for key, value in records:
            self.produce(topic, value, key)
        self._producer.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every produced record is acknowledged; raise if any failed."""
        remaining = self._producer.flush(timeout)
        self._raise_if_failed()
        if remaining:
            raise DeliveryError(f"{remaining} records still undelivered after {timeout}s")

    def poll(self, timeout: float = 0.0) -> None:
        self._producer.poll(timeout)
