"""The consumer's pause bookkeeping against a fake librdkafka consumer."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from streamapp.kafka import consumer as consumer_module
from streamapp.kafka.consumer import BatchConsumer


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


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> type[FakeConsumer]:
    monkeypatch.setattr(consumer_module, "Consumer", FakeConsumer)
    return FakeConsumer


def test_a_partition_paused_for_backpressure_is_not_paused_when_it_comes_back(
    fake: type[FakeConsumer],
) -> None:
    batch = BatchConsumer({}, ["features"], max_buffered=1)
    kafka = batch._consumer
    assert isinstance(kafka, FakeConsumer)
    partitions = [TopicPartition("features", 0), TopicPartition("features", 1)]
    kafka.callbacks["on_assign"](kafka, partitions)
    kafka.pause(partitions[1:])  # as backpressure does when partition 1 runs ahead
    batch._paused.add(("features", 1))

    kafka.rebalance(partitions)  # an eager rebalance hands both partitions back

    assert kafka.paused == set()
    assert batch._paused == set()
    assert batch.assignment == {("features", 0), ("features", 1)}
