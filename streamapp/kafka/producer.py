"""The output producer: delivery errors are saved in the callback and raised on the next
``produce`` or ``flush``, so a lost output can never be followed by a committed offset."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamapp.errors import DeliveryError, FencedError, TransactionError

__all__ = ["OutputProducer"]

# records of an aborted transaction are purged: void by design, not a delivery failure
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}

# another instance with our transactional.id took over: stop, never write outside a transaction
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

logger = logging.getLogger(__name__)


class _FirstError:
    """The delivery callback: keeps the first failure (a separate object, so the producer
    and its owner form no reference cycle and librdkafka is released promptly)."""

    __slots__ = ("error", "topic")

    def __init__(self) -> None:
        self.error: KafkaError | None = None
        self.topic: str | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and self.error is None and err.code() not in _PURGED:
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
            except KafkaException as exc:
                error = exc.args[0]
                # e.g. fenced by a newer instance with our transactional.id
                if error.fatal() or error.code() in (*_FENCED, KafkaError._FATAL):
                    raise FencedError(f"producer failed fatally: {error.str()}") from exc
                raise

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

    # -- transactions (a producer configured with a transactional.id) -------------------------

    def init_transactions(self, timeout: float = 30.0) -> None:
        self._call(self._producer.init_transactions, timeout)

    def begin_transaction(self) -> None:
        self._call(self._producer.begin_transaction)

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = 30.0
    ) -> None:
        self._call(self._producer.send_offsets_to_transaction, offsets, group_metadata, timeout)

    def commit_transaction(self, timeout: float = 30.0) -> None:
        self._call(self._producer.commit_transaction, timeout)
        self._raise_if_failed()

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self._failed.error = None  # records of an aborted transaction are void anyway
        self._call(self._producer.abort_transaction, timeout)

    @staticmethod
    def _call(method: Any, *args: Any) -> None:
        try:
            method(*args)
        except KafkaException as exc:
            error = exc.args[0]
            if error.code() in (*_FENCED, KafkaError._FATAL) or error.fatal():
                raise FencedError(f"producer fenced or failed fatally: {error.str()}") from exc
            raise TransactionError(error.str(), abortable=error.txn_requires_abort()) from exc
