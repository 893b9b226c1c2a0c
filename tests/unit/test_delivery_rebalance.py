"""A producer that died inside a rebalance callback is dealt with by the loop, not raised
out of librdkafka (where it escaped ``close()``, or left a fenced zombie running)."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import TopicPartition

from streamapp.checkpointing.delivery import ExactlyOnce
from streamapp.errors import ConsumerFencedError, DeliveryError, FencedError, ProducerFatalError
from streamapp.settings import Settings
from tests.fakes import FakeBatchConsumer


class DeadCheckpoint:
    """The transactional checkpoint over a producer that failed for good."""

    def __init__(self, failure: Exception) -> None:
        self.failure = failure

    def commit(self, snapshot: bool = False) -> None:
        raise self.failure

    def abort(self) -> None:
        raise self.failure

    def forget(self, partitions: Any) -> None:
        pass


def delivery_over(
    failure: Exception, monkeypatch: pytest.MonkeyPatch, checkpoint: object = None
) -> ExactlyOnce:
    """An exactly-once delivery over ``checkpoint`` (default: one whose abort raises
    ``failure``), whose rewinds do nothing."""
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        delivery={"processing_guarantee": "exactly-once", "instance_id": "w1"},
    )
    delivery = ExactlyOnce(settings, state=None)  # type: ignore[arg-type]
    delivery.attach(FakeBatchConsumer(), checkpoint or DeadCheckpoint(failure))  # type: ignore[arg-type]
    monkeypatch.setattr(delivery, "_rewind", lambda: None)
    return delivery


@pytest.mark.parametrize("callback", ["on_revoke", "on_lost"])
def test_a_fencing_met_in_a_rebalance_stops_the_worker_at_its_next_recovery(
    callback: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    delivery = delivery_over(FencedError("fenced during commit_transaction"), monkeypatch)
    getattr(delivery, callback)([TopicPartition("features", 0)])  # does not raise
    assert delivery.recovery_required
    with pytest.raises(FencedError):
        delivery.recover()


def test_a_producer_dead_in_a_rebalance_is_replaced_before_the_recovery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    delivery = delivery_over(ProducerFatalError("dead"), monkeypatch)
    replaced: list[bool] = []
    monkeypatch.setattr(delivery, "_replace_producer", lambda: replaced.append(True))
    delivery.on_revoke([TopicPartition("features", 0)])
    delivery.recover()
    assert replaced == [True] and not delivery.recovery_required
    delivery.recover()  # once
    assert replaced == [True]


class RecordingCheckpoint(DeadCheckpoint):
    """A checkpoint that records commits and forgets; its abort fails like a coordinator
    that went away (so the open outputs cannot be discarded by an abort)."""

    def __init__(self) -> None:
        super().__init__(ProducerFatalError("abort_transaction failed: timed out"))
        self.log: list[str] = []

    def commit(self, snapshot: bool = False) -> None:
        self.log.append("commit")

    def forget(self, partitions: Any) -> None:
        self.log.append(f"forget {sorted(partitions)}")


@pytest.mark.parametrize("hold", ["recovery due", "closing without a broker"])
def test_a_revoke_commits_nothing_while_a_recovery_is_due_or_on_a_brokerless_close(
    hold: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The offsets stored since the last commit stand for outputs that were aborted or lost:
    a revoke that committed them (it used to) would lose those outputs for good."""
    checkpoint = RecordingCheckpoint()
    delivery = delivery_over(ProducerFatalError("unused"), monkeypatch, checkpoint)
    if hold == "recovery due":
        delivery.recovery_required = True
    else:
        delivery.hold_commits()
    delivery.on_revoke([TopicPartition("features", 0)])
    assert checkpoint.log == ["forget [('features', 0)]"]


def test_open_outputs_that_cannot_be_aborted_get_a_new_producer_not_an_exit(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In an outage the abort after a lost output times out too: that used to escape the
    loop (exit 2) instead of replacing the producer, whose init aborts the transaction."""
    delivery = delivery_over(ProducerFatalError("unused"), monkeypatch, RecordingCheckpoint())
    replaced: list[bool] = []
    monkeypatch.setattr(delivery, "_replace_producer", lambda: replaced.append(True))
    delivery.outputs_failed(DeliveryError("delivery to predictions failed: timed out"))
    assert replaced == [True] and delivery.recovery_required


def test_a_consumer_fenced_while_its_producer_is_not_was_fenced_by_itself(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """librdkafka can fence a lone static member against itself when it rejoins after a
    coordinator failover (it ended the worker in the three-broker test). A newer instance
    inits its producer before its consumer joins, so the producer tells the two apart."""
    fenced = ConsumerFencedError("consumer fenced by a newer instance")
    newer = delivery_over(FencedError("producer fenced during abort_transaction"), monkeypatch)
    assert newer.still_owner(fenced) is False
    # the recording checkpoint's abort meets a dead producer
    itself = delivery_over(ProducerFatalError("unused"), monkeypatch, RecordingCheckpoint())
    assert itself.still_owner(fenced) is True
    replaced: list[bool] = []
    monkeypatch.setattr(itself, "_replace_producer", lambda: replaced.append(True))
    itself.recovery_required = True
    itself.recover()
    assert replaced == [True]
