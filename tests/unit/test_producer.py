"""The output producer turns a fatal client error into the worker's own exceptions."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import KafkaError, KafkaException

import streamapp.kafka.producer as producer_module
from streamapp.errors import DeliveryError, FencedError, ProducerFatalError
from streamapp.kafka.producer import OutputProducer
from tests.fakes import FakeMessage


class FailingClient:
    def __init__(self, code: int) -> None:
        self.code = code

    def produce(self, *args: object, **kwargs: object) -> None:
        pass

    def poll(self, timeout: float = 0.0) -> int:
        raise KafkaException(KafkaError(self.code, "add partitions to transaction", fatal=True))

    def __len__(self) -> int:
        return 1


@pytest.mark.parametrize(
    ("code", "expected"),
    [(KafkaError._FENCED, FencedError), (KafkaError._FATAL, ProducerFatalError)],
)
def test_a_fatal_error_raised_while_serving_reports_is_the_workers_own(
    code: int, expected: type[Exception]
) -> None:
    """A fenced producer can raise from poll() (e.g. adding a partition to the transaction);
    it must reach the worker as FencedError (stop), never as a raw KafkaException."""
    producer = OutputProducer({}, FailingClient(code))  # type: ignore[arg-type]
    with pytest.raises(expected):
        producer.produce_many("predictions", [(b"k", b"v")])
    with pytest.raises(expected):
        producer.in_flight()


def test_a_failed_delivery_is_still_reported_with_reports_for_failures_only() -> None:
    """Successful deliveries are not reported (one Python call per record saved); a record
    that cannot be delivered still is, and the next flush raises it."""
    producer = OutputProducer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 200})
    producer.produce_many("predictions", [(b"k", b"v")])
    with pytest.raises(DeliveryError, match="delivery to predictions failed"):
        producer.flush(timeout=10.0)


class ConflictingClient(FailingClient):
    """A producer librdkafka has already declared fenced, whose commit call then fails
    with a non-fatal conflict (as seen when a zombie's commit raced its fencing)."""

    def poll(self, timeout: float = 0.0) -> int:
        return 0

    def commit_transaction(self, timeout: float = 30.0) -> None:
        conflict = "Conflicting commit_transaction API call is already in progress"
        raise KafkaException(KafkaError(KafkaError._CONFLICT, conflict))


def test_any_transactional_failure_of_a_fenced_producer_is_the_fencing() -> None:
    """It used to surface as a TransactionError ('Conflicting commit_transaction ...'): the
    worker aborted, restored its snapshot and went on as a zombie instead of stopping."""
    producer = OutputProducer({}, ConflictingClient(KafkaError._FENCED))  # type: ignore[arg-type]
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    producer.on_error(fenced)  # librdkafka's error callback says so first
    with pytest.raises(FencedError):
        producer.commit_transaction()


class FencedOnCommit(ConflictingClient):
    """The commit itself raises the fencing (no error callback before it); the commit call
    stays current in librdkafka, so the abort after it conflicts."""

    def commit_transaction(self, timeout: float = 30.0) -> None:
        raise KafkaException(KafkaError(KafkaError._FENCED, "fenced", fatal=True))

    def abort_transaction(self, timeout: float = 30.0) -> None:
        super().commit_transaction()


def test_a_fencing_seen_once_is_what_every_later_call_reports() -> None:
    producer = OutputProducer({}, FencedOnCommit(KafkaError._FENCED))  # type: ignore[arg-type]
    with pytest.raises(FencedError):
        producer.commit_transaction()
    with pytest.raises(FencedError):
        producer.abort_transaction()


def test_a_delivery_failed_by_a_fencing_is_the_fencing() -> None:
    """A record a fenced producer could not deliver fails with the generic ``_FATAL``; the
    fencing behind it came through the error callback. It used to surface as
    ProducerFatalError, on which exactly-once replaced the producer: the new one's
    init_transactions fenced the successor, and the zombie went on."""
    producer = OutputProducer({}, ConflictingClient(KafkaError._FENCED))  # type: ignore[arg-type]
    fenced = KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)
    producer.on_error(fenced)
    producer.on_delivery(
        KafkaError(KafkaError._FATAL, "Fatal error", fatal=True), FakeMessage("predictions")
    )  # type: ignore[arg-type]
    with pytest.raises(FencedError):
        producer.produce_many("predictions", [(b"k", b"v")])


class HangingClient(ConflictingClient):
    """librdkafka stuck in a transactional call past its timeout (librdkafka#5456: seen in
    send_offsets_to_transaction after a broker outage, blocking for minutes, SIGTERM unheard)."""

    def __init__(self, hang_s: float) -> None:
        super().__init__(0)
        self.hang_s = hang_s

        self.returned = False

    def send_offsets_to_transaction(self, *args: object) -> None:
        time.sleep(self.hang_s)  # the hang is the scenario (in C the GIL is released as here)
        self.returned = True


def test_a_transactional_call_stuck_past_its_timeout_fails_the_producer_for_good(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The caller gets its thread back (and a signal handler can run) instead of a process
    stuck in C; the abandoned producer refuses every later transactional call, and its
    owner replaces it."""
    monkeypatch.setattr(producer_module, "HANG_GRACE_S", 0.1)
    client = HangingClient(hang_s=0.0)
    producer = OutputProducer({}, client)  # type: ignore[arg-type]
    producer.send_offsets_to_transaction([], None, timeout=0.1)  # in time: no failure
    client.hang_s, client.returned = 5.0, False  # the next call gets stuck
    with pytest.raises(ProducerFatalError, match=r"did not return within 0\.2 s"):
        producer.send_offsets_to_transaction([], None, timeout=0.1)
    assert not client.returned  # the caller did not wait for the stuck call
    with pytest.raises(ProducerFatalError, match="abandoned"):
        producer.commit_transaction(0.1)
    producer.close()  # leaves the stuck client alone, and does not block
