"""The output producer: delivery errors are saved in the callback and raised on the next
``produce`` or ``flush``, so a lost output can never be followed by a committed offset."""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from streamapp.errors import (
    DeliveryError,
    DeliveryTimeoutError,
    FencedError,
    ProducerFatalError,
    StreamappError,
    TransactionError,
)
from streamapp.kafka.access import authorization_error

__all__ = ["HANG_GRACE_S", "OutputProducer"]

# records of an aborted transaction are purged: void by design, not a delivery failure
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}

# another instance with our transactional.id took over: stop, never write outside a transaction
_FENCED = {KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH}

logger = logging.getLogger(__name__)

# librdkafka can block in a transactional call far past the call's own timeout (seen in
# send_offsets_to_transaction after a broker outage; librdkafka#5456, #5511). Such a call runs
# on a thread of its own: past this grace after its timeout the producer is declared failed,
# and the worker replaces it (the new one's init_transactions fences the stuck one)
HANG_GRACE_S = 15.0


class _FirstError:
    """The delivery and error callbacks: keep the first failure and the fatal error behind a
    later ``_FATAL`` (a separate object, so the producer and its owner form no reference
    cycle and librdkafka is released promptly)."""

    __slots__ = ("error", "fatal", "topic")

    def __init__(self) -> None:
        self.error: KafkaError | None = None
        self.topic: str | None = None
        self.fatal: KafkaError | None = None

    def __call__(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None and err.code() not in _PURGED and (self.error is None or err.fatal()):
            self.error, self.topic = err, msg.topic()

    def on_error(self, err: KafkaError) -> None:
        # librdkafka reports why it became fatal here; produce() then only says _FATAL
        if err.fatal() and self.fatal is None:
            self.fatal = err
        elif not err.fatal():
            logger.debug("producer error: %s", err)


def _fatal(error: KafkaError, during: str) -> StreamappError:
    """The exception for a fatal producer error: fenced (stop) or failed (replace it)."""
    if error.code() in _FENCED:
        return FencedError(f"producer fenced during {during}: {error.str()}")
    return ProducerFatalError(f"producer failed fatally during {during}: {error.str()}")


def _kafka_error(exc: BaseException) -> KafkaError | None:
    """The KafkaError behind ``exc``; librdkafka can raise a fatal error from inside a
    delivery callback, which Python reports as a SystemError caused by it."""
    while exc is not None:
        if isinstance(exc, KafkaException) and isinstance(exc.args[0], KafkaError):
            return exc.args[0]
        exc = exc.__cause__  # type: ignore[assignment]
    return None


class OutputProducer:
    """``produce`` never blocks forever and never drops: a full queue is drained first."""

    def __init__(self, config: dict[str, Any], client: Producer | None = None) -> None:
        """``client`` is the librdkafka producer to wrap, made from ``config`` when not given
        (with its callbacks wired to :meth:`on_delivery` and :meth:`on_error`); one given,
        e.g. a stand-in, is used as it is, and reports through those two itself."""
        self._failed = _FirstError()
        self._hung: str | None = None  # a transactional call stuck past its timeout
        self._transactional_id = config.get("transactional.id")
        # one global delivery callback, called for failures only: a report per delivered
        # record cost the loop ~0.5 us of Python each (a Message object and a call)
        self._producer = client or Producer(
            {
                **config,
                "on_delivery": self._failed,
                "delivery.report.only.error": True,
                "error_cb": self._failed.on_error,
            }
        )

    def on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        """librdkafka's delivery report: a failure is kept, and raised by the next call."""
        self._failed(err, msg)

    def on_error(self, err: KafkaError) -> None:
        """librdkafka's error callback: a fatal error (why it became fatal) is kept."""
        self._failed.on_error(err)

    def _raise_if_failed(self) -> None:
        failed = self._failed
        if failed.error is not None:
            err, topic, failed.error = failed.error, failed.topic, None
            # a fenced producer's records fail with the generic _FATAL: the fencing behind it
            # is what stops the worker (a replaced producer would fence its successor)
            if (fatal := self._if_fatal(err, f"delivery to {topic}")) is not None:
                raise fatal
            if (refused := authorization_error(err, f"writing to {topic}")) is not None:
                raise refused  # an ACL no re-read mends: one line, exit
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
                # e.g. fenced by a newer instance with our transactional.id
                if (fatal := self._if_fatal(exc.args[0], "produce")) is not None:
                    raise fatal from exc
                raise

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        # delivery reports are served only by poll/flush, so one check before the batch sees
        # what a check per record would; a full queue or an error takes produce()'s way
        self._raise_if_failed()
        produce = self._producer.produce
        for i, (key, value) in enumerate(records):
            try:
                produce(topic, value, key)
            except (BufferError, KafkaException):
                for later_key, later_value in records[i:]:
                    self.produce(topic, later_value, later_key)
                break
        self.poll(0)

    def flush(self, timeout: float = 30.0) -> None:
        """Wait until every produced record is acknowledged; raise if any failed."""
        try:
            remaining = self._producer.flush(timeout)
        except (KafkaException, SystemError) as exc:
            error = _kafka_error(exc)
            if error is None:
                raise
            raise _fatal(error, "flush") from exc
        self._raise_if_failed()
        if remaining:
            raise DeliveryTimeoutError(f"{remaining} records still unacknowledged after {timeout}s")

    def poll(self, timeout: float = 0.0) -> None:
        """Serve delivery reports; a fatal error (e.g. fenced while adding a partition to the
        transaction) raises as :class:`FencedError` or :class:`ProducerFatalError`."""
        try:
            self._producer.poll(timeout)
        except (KafkaException, SystemError) as exc:
            error = _kafka_error(exc)
            if error is None:
                raise
            raise _fatal(error, "poll") from exc

    def in_flight(self) -> int:
        """Records produced and not acknowledged yet (after serving the delivery callbacks;
        raises if one failed)."""
        self.poll(0)
        self._raise_if_failed()
        return len(self._producer)

    # -- transactions (a producer configured with a transactional.id) -------------------------

    def init_transactions(self, timeout: float = 30.0) -> None:
        self._call(self._producer.init_transactions, timeout, timeout=timeout)

    def begin_transaction(self) -> None:
        self._call(self._producer.begin_transaction)

    def send_offsets_to_transaction(
        self, offsets: list[TopicPartition], group_metadata: Any, timeout: float = 30.0
    ) -> None:
        self._call(
            self._producer.send_offsets_to_transaction,
            offsets,
            group_metadata,
            timeout,
            timeout=timeout,
        )

    def commit_transaction(self, timeout: float = 30.0) -> None:
        self._call(self._producer.commit_transaction, timeout, timeout=timeout)
        self._raise_if_failed()

    def abort_transaction(self, timeout: float = 30.0) -> None:
        self._failed.error = None  # records of an aborted transaction are void anyway
        self._call(self._producer.abort_transaction, timeout, timeout=timeout)

    def _if_fatal(self, error: KafkaError, during: str) -> StreamappError | None:
        """The worker's exception when ``error`` is fatal, or when librdkafka declared the
        producer fatal before it: a fenced producer can fail a later call with a non-fatal
        error (a conflicting commit), and what has to stop the worker is the fencing."""
        fatal = self._fatal_error()
        if fatal is None and (error.fatal() or error.code() in (*_FENCED, KafkaError._FATAL)):
            # remembered: the error callback may not have said so, and the abort that follows
            # a failed commit must not report its conflict instead of the fencing
            fatal = self._failed.fatal = error
        return None if fatal is None else _fatal(fatal, during)

    def _fatal_error(self) -> KafkaError | None:
        """The underlying fatal error once the producer reported ``_FATAL``."""
        try:
            self._producer.poll(0)  # serve the error callback
        except KafkaException as exc:  # a fatal producer raises its error here too
            error = _kafka_error(exc)
            if error is not None and error.fatal() and self._failed.fatal is None:
                self._failed.fatal = error
        failed = self._failed
        if failed.fatal is not None:
            return failed.fatal
        return failed.error if failed.error is not None and failed.error.fatal() else None

    def close(self) -> None:
        """Drop whatever is still queued (after a fatal error nothing more can be sent)."""
        if self._hung is not None:
            return  # another thread is inside librdkafka: leave the client to it
        try:
            self._producer.purge(in_queue=True, in_flight=True, blocking=False)
            self._producer.poll(0)
        except KafkaException as exc:  # a failed producer may refuse even that
            logger.debug("purge on close: %s", exc)

    def _call(self, method: Any, *args: Any, timeout: float | None = None) -> None:
        """``method(*args)``, its errors as the worker's. One given a ``timeout`` runs on a
        thread of its own: stuck past ``timeout + HANG_GRACE_S``, the producer is failed for
        good (:class:`ProducerFatalError`), and the caller replaces it."""
        if self._hung is not None:
            raise ProducerFatalError(f"producer abandoned: {self._hung} never returned")
        try:
            if timeout is None:
                method(*args)
            else:
                self._call_watched(method, args, timeout + HANG_GRACE_S)
        except (KafkaException, SystemError) as exc:
            error = _kafka_error(exc)
            if error is None:
                raise
            doing = f"{method.__name__} as transactional.id {self._transactional_id}"
            if (refused := authorization_error(error, doing)) is not None:
                raise refused from exc  # an ACL no new producer mends: one line, exit
            if (fatal := self._if_fatal(error, method.__name__)) is not None:
                raise fatal from exc
            raise TransactionError(
                error.str(), abortable=error.txn_requires_abort(), retriable=error.retriable()
            ) from exc

    def _call_watched(self, method: Any, args: tuple[Any, ...], limit: float) -> None:
        outcome: list[BaseException | None] = []

        def call() -> None:
            try:
                method(*args)
                outcome.append(None)
            except BaseException as exc:  # handed to the caller's thread
                outcome.append(exc)

        # a daemon: a thread stuck in librdkafka must not hold the process at exit
        thread = threading.Thread(target=call, name=f"producer-{method.__name__}", daemon=True)
        thread.start()
        thread.join(limit)
        if thread.is_alive():
            self._hung = method.__name__
            logger.error(
                "%s did not return within %g s (librdkafka#5456): abandoning the producer",
                method.__name__,
                limit,
            )
            raise ProducerFatalError(f"{method.__name__} did not return within {limit:g} s")
        if (error := outcome[0]) is not None:
            raise error
