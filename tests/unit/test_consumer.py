"""The consumer's pause bookkeeping against a fake librdkafka consumer."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamapp.errors import BrokerError, CommitPostponedError, FencedError
from streamapp.kafka import consumer as consumer_module
from streamapp.kafka.consumer import BatchConsumer
from tests.fakes import FakeMessage


class FakeConsumer:
    """Pause state as librdkafka keeps it: per partition, across rebalances."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.paused: set[tuple[str, int]] = set()
        self.callbacks: dict[str, Any] = {}

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.callbacks = callbacks

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def rebalance(self, partitions: list[TopicPartition]) -> None:
        self.callbacks["on_revoke"](self, partitions)
        self.callbacks["on_assign"](self, partitions)


class FetchingConsumer(FakeConsumer):
    """Hands out queued messages; high watermarks as the last fetch response reported them."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.queue: list[FakeMessage] = []
        self.high: dict[tuple[str, int], int] = {}

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeMessage]:
        out, self.queue = self.queue[:num_messages], self.queue[num_messages:]
        return out

    def poll(self, timeout: float = -1) -> FakeMessage | None:
        return self.queue.pop(0) if self.queue else None

    def get_watermark_offsets(self, tp: TopicPartition, cached: bool = False) -> tuple[int, int]:
        return 0, self.high.get((tp.topic, tp.partition), -1)

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return partitions


def _two_partitions(
    monkeypatch: pytest.MonkeyPatch, max_buffered: int = 2_000
) -> tuple[BatchConsumer, FetchingConsumer]:
    """A batch consumer on a fake client, assigned features[0] and features[1]."""
    monkeypatch.setattr(consumer_module, "Consumer", FetchingConsumer)
    batch = BatchConsumer({}, ["features"], max_idle_s=60.0, max_buffered=max_buffered)
    kafka = batch.client
    assert isinstance(kafka, FetchingConsumer)
    kafka.callbacks["on_assign"](
        kafka, [TopicPartition("features", 0), TopicPartition("features", 1)]
    )
    return batch, kafka


def test_a_partition_paused_for_backpressure_is_not_paused_when_it_comes_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, kafka = _two_partitions(monkeypatch, max_buffered=1)
    # partition 1 runs ahead while partition 0 has brought nothing yet: its buffer fills up
    kafka.queue = [FakeMessage("features", 1, 0, 20), FakeMessage("features", 1, 1, 30)]
    assert batch.consume(10, 0.0) == []
    assert kafka.paused == batch.paused == {("features", 1)}

    # an eager rebalance hands both partitions back
    kafka.rebalance([TopicPartition("features", 0), TopicPartition("features", 1)])

    assert kafka.paused == set()
    assert batch.paused == set()
    assert batch.assignment == {("features", 0), ("features", 1)}


def test_a_partition_that_runs_empty_but_is_fetched_to_its_end_does_not_hold_the_batch(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, kafka = _two_partitions(monkeypatch)
    # one fetch brought everything there is: partition 0 up to offset 1, partition 1 up to 2
    kafka.queue = [
        FakeMessage("features", 0, 0, 10),
        FakeMessage("features", 1, 0, 20),
        FakeMessage("features", 1, 1, 30),
    ]
    kafka.high = {("features", 0): 1, ("features", 1): 2}

    released = batch.consume(10, 0.0)

    # partition 0 runs empty after its one message; it is fetched to its end, so the merge
    # goes on in timestamp order within the same call instead of waiting for the next poll
    assert [(m.partition(), m.offset()) for m in released] == [(0, 0), (1, 0), (1, 1)]


def test_a_partition_with_more_on_the_broker_still_holds_later_messages_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    batch, kafka = _two_partitions(monkeypatch)
    kafka.queue = [
        FakeMessage("features", 0, 0, 10),
        FakeMessage("features", 1, 0, 20),
        FakeMessage("features", 1, 1, 30),
    ]
    kafka.high = {("features", 0): 5, ("features", 1): 2}  # partition 0 has 4 more not fetched

    released = batch.consume(10, 0.0)

    assert [(m.partition(), m.offset()) for m in released] == [(0, 0)]


class ClosingConsumer(FakeConsumer):
    """librdkafka can serve a pending assignment from inside close()."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.answered: list[list[TopicPartition]] = []

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.answered.append(partitions)

    def close(self) -> None:
        self.callbacks["on_assign"](self, [TopicPartition("features", 0)])


def test_an_assignment_served_while_closing_is_not_positioned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # positioning reads the committed offsets, which fails on a handle being destroyed, and
    # the failure used to escape close() (and the worker's)
    monkeypatch.setattr(consumer_module, "Consumer", ClosingConsumer)
    positioned: list[Any] = []

    def on_assign(partitions: list[TopicPartition]) -> None:
        positioned.append(partitions)
        raise RuntimeError("Failed to get committed offsets: Broker handle destroyed")

    batch = BatchConsumer({}, ["features"], on_assign=on_assign)
    batch.close(join_timeout_s=0)  # the group never answered before close
    assert positioned == [] and batch.assignment == set()
    # answered by the callback itself: confluent-kafka's own answer asks librdkafka for the
    # rebalance protocol first, which hung a closing consumer forever (librdkafka#4041)
    kafka = batch.client
    assert isinstance(kafka, ClosingConsumer)
    assert kafka.answered == [[TopicPartition("features", 0)]]


def error_message(error: KafkaError) -> FakeMessage:
    """A client error as librdkafka hands it out: a message that carries it."""
    return FakeMessage("features", 0, -1, 0, error=error)


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("Static consumer fenced by other consumer with same group.instance.id", FencedError),
        ("something else went wrong for good", BrokerError),
    ],
    ids=["fenced", "other"],
)
def test_a_fatal_consumer_error_stops_the_worker(
    monkeypatch: pytest.MonkeyPatch, reason: str, expected: type
) -> None:
    # librdkafka reports it as _FATAL, an error that does not say fatal() itself: it was
    # logged as a warning and the fenced member went on consuming as a zombie
    error = KafkaError(KafkaError._FATAL, f"Fatal error: Broker: {reason}")
    assert not error.fatal()
    batch, kafka = _two_partitions(monkeypatch)
    kafka.queue = [error_message(error)]
    with pytest.raises(expected):
        batch.consume(10, 0.0)


class JoiningConsumer(FakeConsumer):
    """The group answers the first join on the third poll."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.polls = 0
        self.closed_after: int | None = None

    def poll(self, timeout: float = -1) -> None:
        self.polls += 1
        if self.polls == 3:
            self.callbacks["on_assign"](self, [TopicPartition("features", 0)])

    def assign(self, partitions: list[TopicPartition]) -> None:
        pass

    def close(self) -> None:
        self.closed_after = self.polls


def test_close_waits_for_a_first_assignment_on_its_way(monkeypatch: pytest.MonkeyPatch) -> None:
    # served inside close() instead, it hung there for good (librdkafka#4041): 10 of 40 workers
    # closed 0-400 ms after start never exited
    monkeypatch.setattr(consumer_module, "Consumer", JoiningConsumer)
    positioned: list[list[TopicPartition]] = []
    batch = BatchConsumer({}, ["features"], on_assign=lambda parts: positioned.append(parts))
    batch.close()
    kafka = batch.client
    assert isinstance(kafka, JoiningConsumer)
    assert kafka.closed_after == 3 and positioned == [[TopicPartition("features", 0)]]


class CommittingConsumer(FakeConsumer):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.refusal: KafkaError | None = None

    def commit(self, offsets: list[TopicPartition], asynchronous: bool) -> None:
        if self.refusal is not None:
            raise KafkaException(self.refusal)


@pytest.mark.parametrize(
    "code", [KafkaError._WAIT_COORD, KafkaError.COORDINATOR_NOT_AVAILABLE, KafkaError._TRANSPORT]
)
def test_a_commit_while_the_coordinator_is_away_is_postponed_not_fatal(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """An Apache Kafka broker SIGKILL made the commit raise _WAIT_COORD out of the loop and
    end the worker; it is a postponement the outage clock bounds."""
    monkeypatch.setattr(consumer_module, "Consumer", CommittingConsumer)
    batch = BatchConsumer({}, ["features"])
    kafka = batch.client
    assert isinstance(kafka, CommittingConsumer)
    kafka.refusal = KafkaError(code)
    with pytest.raises(CommitPostponedError):
        batch.commit([TopicPartition("features", 0, 5)])
    kafka.refusal = KafkaError(KafkaError.REBALANCE_IN_PROGRESS)
    assert batch.commit([TopicPartition("features", 0, 5)]) is False
    kafka.refusal = KafkaError(KafkaError.OFFSET_METADATA_TOO_LARGE)
    with pytest.raises(KafkaException):
        batch.commit([TopicPartition("features", 0, 5)])
    kafka.refusal = None
    assert batch.commit([TopicPartition("features", 0, 5)]) is True


class IncrementalConsumer(FakeConsumer):
    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.calls: list[tuple[str, list[TopicPartition]]] = []

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("assign", partitions))

    def incremental_assign(self, partitions: list[TopicPartition]) -> None:
        self.calls.append(("incremental_assign", partitions))


@pytest.mark.parametrize(
    ("config", "call"),
    [
        ({}, "assign"),
        ({"group.protocol": "consumer"}, "incremental_assign"),
        ({"partition.assignment.strategy": "cooperative-sticky"}, "incremental_assign"),
    ],
)
def test_a_positioned_assignment_is_incremental_under_a_cooperative_protocol(
    monkeypatch: pytest.MonkeyPatch, config: dict[str, Any], call: str
) -> None:
    """Under KIP-848 a callback gets only the added partitions: assign() would drop the
    partitions already owned."""
    monkeypatch.setattr(consumer_module, "Consumer", IncrementalConsumer)
    batch = BatchConsumer(config, ["features"], on_assign=lambda partitions: partitions)
    kafka = batch.client
    assert isinstance(kafka, IncrementalConsumer)
    added = [TopicPartition("features", 1)]
    kafka.callbacks["on_assign"](kafka, added)
    assert kafka.calls == [(call, added)]


def test_an_authorization_error_while_consuming_ends_the_worker_with_one_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without READ on the group the worker used to log GROUP_AUTHORIZATION_FAILED for ever
    and predict nothing."""
    error = KafkaError(KafkaError.GROUP_AUTHORIZATION_FAILED, "Broker: Group authorization failed")
    batch, kafka = _two_partitions(monkeypatch)
    kafka.queue = [error_message(error)]
    with pytest.raises(BrokerError, match="reading features\\[0\\]: GROUP_AUTHORIZATION_FAILED"):
        batch.consume(10, 0.0)
