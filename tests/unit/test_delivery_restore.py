"""Exactly-once's restore and replay bookkeeping, with fakes for the consumer, producer and
state store: the drift cursor read back with the snapshot, a replay cut short by a revoke,
and partitions that were never committed."""

from __future__ import annotations

from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING
from confluent_kafka import TopicPartition as KafkaPartition

from streamapp.checkpointing.delivery import ExactlyOnce
from streamapp.checkpointing.state_store import Restored, Snapshot
from streamapp.drift.monitor import DriftCursor
from streamapp.errors import TransactionError
from streamapp.settings import Settings
from tests.fakes import FakeBatchConsumer, FakeStateStore

FEATURES = ("features", 0)


class FakeState:
    def __init__(self) -> None:
        self.log: list[Any] = []

    def snapshot(self) -> bytes:
        return b"state"

    def restore(self, snapshot: Snapshot | None) -> None:
        self.log.append(("restore", snapshot.seq if snapshot else None))

    def drift_cursor(self) -> DriftCursor:
        return DriftCursor()

    def resume_drift(self, committed: DriftCursor) -> None:
        self.log.append(("resume", committed))

    def replay_finished(self) -> None:
        self.log.append("replay finished")


class FakeCheckpoint:
    def __init__(self) -> None:
        self.processed: dict[tuple[str, int], int] = {}
        self.committed: dict[tuple[str, int], int] = {}
        self.seq = 0

    def reset(self, processed: dict, committed: dict, snapshot_partitions: set) -> None:
        self.processed, self.committed = dict(processed), dict(committed)

    def restored(self, seq: int) -> None:
        self.seq = max(self.seq, seq)

    def assigned(self, starts: dict, committed: dict) -> None:
        self.committed.update(committed)
        for tp, offset in starts.items():
            self.processed.setdefault(tp, offset)

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        self.processed.update(offsets)

    def outputs_written(self) -> None:
        pass

    def forget(self, partitions: Any) -> None:
        for tp in partitions:
            self.processed.pop(tp, None)

    def commit(self, snapshot: bool = False) -> None:
        self.committed.update(self.processed)


def delivery(
    restored: Restored, committed: dict[tuple[str, int], int]
) -> tuple[ExactlyOnce, FakeState, FakeBatchConsumer, FakeCheckpoint]:
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        delivery={"processing_guarantee": "exactly-once", "instance_id": "w1"},
    )
    state = FakeState()
    eos = ExactlyOnce(settings, state, store=FakeStateStore(restored))  # type: ignore[arg-type]
    consumer = FakeBatchConsumer(committed=committed)
    checkpoint = FakeCheckpoint()
    eos.attach(consumer, checkpoint)  # type: ignore[arg-type]
    return eos, state, consumer, checkpoint


def test_a_restore_hands_the_stored_drift_cursor_to_the_state_after_the_snapshot() -> None:
    cursor = DriftCursor(reports=7, events=700, labels=650)
    snapshot = Snapshot(3, b"", {FEATURES: 100})
    eos, state, _, _ = delivery(Restored(snapshot, cursor.to_json()), {FEATURES: 400})
    eos.restore()
    assert state.log == [("restore", 3), ("resume", cursor)]
    eos.on_assign([KafkaPartition(*FEATURES)])
    assert eos.replaying and "replay finished" not in state.log  # 100..400 is replayed
    eos.store({FEATURES: 400})
    assert not eos.replaying and state.log[-1] == "replay finished"


def test_a_stored_cursor_that_is_not_one_is_ignored() -> None:
    eos, state, _, _ = delivery(Restored(None, b"\x00junk"), {})
    eos.restore()
    assert state.log == [("restore", None)]


def test_a_replay_cut_short_by_a_revoke_is_ended_by_the_next_assignment_not_the_revoke() -> None:
    eos, state, _, _ = delivery(Restored(Snapshot(1, b"", {FEATURES: 100}), None), {FEATURES: 400})
    eos.restore()
    eos.on_assign([KafkaPartition(*FEATURES)])
    eos.forget([FEATURES])  # revoked mid-replay: it may come back and replay again
    assert "replay finished" not in state.log
    eos.on_assign([KafkaPartition(*FEATURES)])
    assert eos.replaying and "replay finished" not in state.log
    eos.forget([FEATURES])
    eos.on_assign([KafkaPartition("features", 1)])  # another partition, nothing to replay
    assert state.log[-1] == "replay finished"


def test_a_never_committed_partition_is_rewound_to_the_start_but_not_recorded_as_processed() -> (
    None
):
    eos, _, consumer, checkpoint = delivery(Restored(None, None), {})
    consumer.assignment = {FEATURES}
    eos.recover()
    assert consumer.rewound == {FEATURES: OFFSET_BEGINNING}
    assert checkpoint.processed == {}


def test_a_restored_offset_of_a_partition_with_no_committed_offset_starts_no_replay() -> None:
    eos, _, _, _ = delivery(Restored(Snapshot(1, b"", {FEATURES: 50}), None), {})
    eos.restore()
    assert eos.on_assign([KafkaPartition(*FEATURES)])[0].offset < 0  # the stored offset
    assert not eos.replaying


def test_no_assignment_is_not_the_end_of_a_replay_that_has_not_started() -> None:
    # all partitions lost, the recovery runs before the group assigns them again; or more
    # members than partitions: the skip must wait for the replay the next assignment brings
    eos, state, _, _ = delivery(Restored(Snapshot(1, b"", {FEATURES: 100}), None), {FEATURES: 400})
    eos.restore()
    eos.recover()
    eos.on_assign([])
    assert "replay finished" not in state.log
    eos.on_assign([KafkaPartition(*FEATURES)])
    assert eos.replaying and "replay finished" not in state.log


def test_partitions_revoked_and_assigned_back_are_not_replayed_again() -> None:
    eos, _, consumer, _ = delivery(
        Restored(Snapshot(1, b"", {FEATURES: 100}), None), {FEATURES: 400}
    )
    eos.restore()
    eos.on_assign([KafkaPartition(*FEATURES)])
    eos.store({FEATURES: 900})  # the replay is done; live up to 900
    eos.on_revoke([KafkaPartition(*FEATURES)])  # commits 900 with a snapshot
    consumer.committed_offsets[FEATURES] = 900
    assert eos.on_assign([KafkaPartition(*FEATURES)])[0].offset == 900
    assert not eos.replaying  # it used to seek back to the start-up snapshot's 100


def test_no_final_commit_while_a_recovery_is_due() -> None:
    # e.g. SIGTERM while the broker is down and the recovery after an aborted commit has not
    # run yet: the processed offsets are those of outputs that were aborted
    eos, _, _, checkpoint = delivery(Restored(None, None), {FEATURES: 100})
    eos.store({FEATURES: 300})
    eos.recovery_required = True
    with pytest.raises(TransactionError, match="recovery is due"):  # exit 2, one line
        eos.commit_final()
    assert checkpoint.committed == {}
    eos.recovery_required = False
    eos.commit_final()
    assert checkpoint.committed == {FEATURES: 300}
