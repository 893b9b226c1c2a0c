"""The partition tail's thread against a fake client: it survives an unreachable broker, is
assigned only while there is something new, and reads each record once."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from streamapp.kafka import tail as tail_module
from streamapp.kafka.tail import PartitionTail
from tests.conftest import wait_until
from tests.fakes import FakeMessage


class FlakyConsumer:
    """A partition whose end moves when ``written`` grows; the broker is down for the first
    ``down`` watermark queries."""

    down = 2

    def __init__(self, config: dict[str, Any]) -> None:
        self.written = 0
        self.queries = 0
        self.assigned_at: int | None = None
        self.assignments = 0
        self.pending: list[FakeMessage] = []
        self.closed = False

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float) -> tuple[int, int]:
        self.queries += 1
        if self.queries <= self.down:
            raise KafkaException(KafkaError(KafkaError._TRANSPORT))
        return 0, self.written

    def assign(self, partitions: list[TopicPartition]) -> None:
        self.assignments += 1
        self.assigned_at = partitions[0].offset
        end = self.written
        records = [FakeMessage("model-updates", 0, o) for o in range(self.assigned_at, end)]
        eof = FakeMessage("model-updates", 0, end, error=KafkaError(KafkaError._PARTITION_EOF))
        self.pending = [*records, eof]
        self.position_after = end

    def unassign(self) -> None:
        self.assigned_at, self.pending = None, []

    def poll(self, timeout: float) -> FakeMessage | None:
        return self.pending.pop(0) if self.pending and self.assigned_at is not None else None

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        out, self.pending = self.pending[:num_messages], self.pending[num_messages:]
        return out

    def position(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(partitions[0].topic, 0, self.position_after)]

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def tail(monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(tail_module, "Consumer", FlakyConsumer)
    tails: list[PartitionTail] = []

    def make() -> tuple[PartitionTail, FlakyConsumer]:
        t = PartitionTail({}, "model-updates", interval_s=0.01)
        tails.append(t)
        assert isinstance(t.client, FlakyConsumer)
        return t, t.client

    yield make
    for t in tails:
        t.close()


def _read(t: PartitionTail, count: int, timeout: float = 5.0) -> list[int]:
    got: list[int] = []

    def enough() -> bool:
        got.extend(m.offset() for m in t.poll())
        return len(got) >= count

    wait_until(enough, lambda: f"{count} records, read {got}", timeout, interval=0.01)
    return got


def test_a_tail_outlives_an_unreachable_broker_and_reads_each_record_once(tail: Any) -> None:
    t, kafka = tail()
    kafka.written = 3
    assert _read(t, 3) == [0, 1, 2]  # after two failed looks
    assert kafka.queries > FlakyConsumer.down
    assignments, queries = kafka.assignments, kafka.queries
    wait_until(lambda: kafka.queries >= queries + 10, "10 looks at an end that did not move", 5)
    assert kafka.assignments == assignments and t.poll() == []
    kafka.written = 5
    assert _read(t, 2) == [3, 4]
    t.close()
    assert kafka.closed and not t.reading
