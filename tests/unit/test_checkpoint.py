"""The exactly-once checkpoint's bookkeeping, with fakes for the producer, group and store."""

from __future__ import annotations

import time
from typing import Any

import pytest

from streamapp.checkpointing.checkpoint import TransactionalCheckpoint
from streamapp.errors import FencedError, ProducerFatalError, TransactionError
from tests.fakes import FakeClock, FakeStateStore


class FakeProducer:
    """Records the transaction calls; ``fail_commit`` makes the next commit fail."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.fail_commit: TransactionError | None = None

    def begin_transaction(self) -> None:
        self.log.append("begin")

    def send_offsets_to_transaction(self, offsets: Any, group_metadata: Any, timeout: float = 0):
        self.log.append(("offsets", [(o.topic, o.partition, o.offset) for o in offsets]))

    def commit_transaction(self, timeout: float = 0) -> None:
        if self.fail_commit is not None:
            failure, self.fail_commit = self.fail_commit, None
            raise failure
        self.log.append("commit")

    def abort_transaction(self, timeout: float = 0) -> None:
        self.log.append("abort")


class FakeGroup:
    def group_metadata(self) -> str:
        return "group"


@pytest.fixture
def parts() -> tuple[FakeProducer, FakeStateStore, FakeClock]:
    return FakeProducer(), FakeStateStore(), FakeClock()


def checkpoint(parts: tuple[FakeProducer, FakeStateStore, FakeClock], **kwargs: Any) -> Any:
    producer, store, clock = parts
    state = iter(range(1000))
    return TransactionalCheckpoint(
        FakeGroup(),
        producer,
        store,
        lambda: f"state{next(state)}".encode(),
        interval_s=1.0,
        snapshot_interval_s=10.0,
        clock=clock,
        **kwargs,
    )


def test_a_transaction_is_open_from_the_start_and_reopened_after_each_commit(parts) -> None:
    producer, store, _ = parts
    cp = checkpoint(parts)
    cp.store({("features", 0): 5})
    cp.commit()
    # the first commit of a partition carries a snapshot: a restore must cover it
    assert producer.log == ["begin", ("offsets", [("features", 0, 5)]), "commit", "begin"]
    assert [(seq, offsets) for seq, _, offsets in store.snapshots] == [(1, {("features", 0): 5})]
    assert cp.committed == {("features", 0): 5} and cp.pending == {}


def test_commit_if_due_waits_for_the_interval_and_snapshots_on_their_own_interval(parts) -> None:
    producer, store, clock = parts
    cp = checkpoint(parts)
    cp.store({("features", 0): 1})
    cp.commit_if_due()
    assert producer.log == ["begin"]  # not due yet
    clock.now = 1.0
    cp.commit_if_due()
    assert len(store.snapshots) == 1  # first commit of the partition
    clock.now = 2.0
    cp.store({("features", 0): 2})
    cp.commit_if_due()
    assert len(store.snapshots) == 1 and cp.committed == {("features", 0): 2}
    clock.now = 12.0
    cp.store({("features", 0): 3})
    cp.commit_if_due()
    assert [seq for seq, _, _ in store.snapshots] == [1, 2]  # the snapshot interval passed


def test_nothing_new_commits_nothing_unless_a_snapshot_of_newer_state_is_asked(parts) -> None:
    producer, store, _ = parts
    cp = checkpoint(parts)
    cp.store({("features", 0): 1})
    cp.commit(snapshot=True)
    before = list(producer.log)
    cp.commit()
    cp.commit(snapshot=True)  # the last commit already wrote a snapshot of this state
    assert producer.log == before and len(store.snapshots) == 1


def test_a_cursor_is_written_in_the_transaction_whenever_it_moved(parts) -> None:
    producer, _, _ = parts
    cursor = {"now": b"c1"}
    cp = checkpoint(parts, cursor=lambda: cursor["now"])
    cp.store({("features", 0): 5})
    cp.commit()
    assert producer.log[1:4] == [("cursor", b"c1"), ("offsets", [("features", 0, 5)]), "commit"]
    cp.store({("features", 0): 6})
    cp.commit()  # unchanged: not written again
    assert ("cursor", b"c1") not in producer.log[4:]
    cursor["now"] = b"c2"
    cp.store({("features", 0): 7})
    producer.fail_commit = TransactionError("broker said no", abortable=True)
    with pytest.raises(TransactionError):
        cp.commit()
    cp.store({("features", 0): 7})
    cp.commit()  # the aborted transaction's cursor is void: written again
    assert producer.log[-4:] == [
        ("cursor", b"c2"),
        ("offsets", [("features", 0, 7)]),
        "commit",
        "begin",
    ]
    assert [entry for entry in producer.log if entry[0] == "cursor"] == [
        ("cursor", b"c1"),
        ("cursor", b"c2"),
        ("cursor", b"c2"),
    ]


def test_no_snapshot_is_written_before_any_input_position_is_known(parts) -> None:
    # stopped before its first assignment: a snapshot without offsets would make the next
    # start skip the replay its restored state needs
    producer, store, _ = parts
    cp = checkpoint(parts)
    cp.store({})  # e.g. the last partial drift report
    cp.commit(snapshot=True)
    assert store.snapshots == [] and producer.log[-2:] == ["commit", "begin"]


def test_a_failed_commit_aborts_reopens_and_keeps_the_offsets_uncommitted(parts) -> None:
    producer, _, _ = parts
    cp = checkpoint(parts)
    cp.store({("features", 0): 7})
    producer.fail_commit = TransactionError("broker said no", abortable=True)
    with pytest.raises(TransactionError):
        cp.commit()
    assert producer.log[-2:] == ["abort", "begin"]
    assert cp.aborts == 1 and cp.committed == {} and cp.commits == 0


def test_a_commit_error_that_cannot_be_aborted_fails_the_producer(parts) -> None:
    """Not abortable: the transaction's state is unknown. Restoring and replaying into it
    would publish twice (the open transaction still holds the outputs), so the producer is
    reported failed for good and replaced (its successor's init settles the transaction)."""
    producer, _, _ = parts
    cp = checkpoint(parts)
    cp.store({("features", 0): 7})
    producer.fail_commit = TransactionError("fenced", abortable=False)
    with pytest.raises(ProducerFatalError, match="unknown state"):
        cp.commit()
    assert "abort" not in producer.log


class DeadProducer(FakeProducer):
    """librdkafka after a commit went wrong: the commit call stays current, so an abort
    conflicts with it."""

    def abort_transaction(self, timeout: float = 0) -> None:
        self.log.append("abort")
        raise TransactionError(
            "Conflicting commit_transaction API call is already in progress",
            abortable=False,
            retriable=True,
        )


@pytest.mark.parametrize(
    "failure",
    [FencedError("producer fenced during commit_transaction"), ProducerFatalError("dead")],
    ids=["fenced", "fatal"],
)
def test_a_dead_producer_s_commit_failure_reaches_the_worker_unaborted(failure) -> None:
    # a zombie whose commit met its successor's fencing must stop as fenced, not be told
    # that its abort conflicted and go on as if it still owned the transactional.id
    producer = DeadProducer()
    cp = checkpoint((producer, FakeStateStore(), FakeClock()))
    cp.store({("features", 0): 7})
    producer.fail_commit = failure
    with pytest.raises(type(failure)):
        cp.commit()
    assert "abort" not in producer.log and cp.committed == {}


def test_a_commit_still_in_doubt_after_every_attempt_reports_a_dead_producer() -> None:
    # it can neither commit nor abort: only a new producer settles its transaction
    from streamapp.checkpointing.checkpoint import COMMIT_ATTEMPTS

    class NeverAnswers(DeadProducer):
        def commit_transaction(self, timeout: float = 0) -> None:
            self.log.append("commit attempt")
            raise TransactionError("timed out", abortable=False, retriable=True)

    producer = NeverAnswers()
    cp = checkpoint((producer, FakeStateStore(), FakeClock()))
    cp.store({("features", 0): 7})
    with pytest.raises(ProducerFatalError, match="in doubt"):
        cp.commit()
    assert producer.log.count("commit attempt") == COMMIT_ATTEMPTS
    assert "abort" not in producer.log and cp.committed == {}


def test_an_injected_fault_aborts_and_is_reported_as_a_transaction_error(parts) -> None:
    producer, _, _ = parts

    def fail(point: str) -> None:
        raise RuntimeError(f"fault at {point}")

    cp = checkpoint(parts, fault_hook=fail)
    cp.store({("features", 0): 7})
    with pytest.raises(TransactionError, match="fault at commit"):
        cp.commit()
    assert producer.log[-2:] == ["abort", "begin"] and cp.aborts == 1


def test_forget_and_reset_move_the_bookkeeping(parts) -> None:
    cp = checkpoint(parts)
    cp.store({("features", 0): 3, ("features", 1): 4})
    cp.forget([("features", 1)])
    assert cp.pending == {("features", 0): 3}
    cp.reset({("features", 0): 1}, {("features", 0): 2}, {("features", 0)})
    assert cp.processed == {("features", 0): 1} and cp.pending == {}


def test_assigned_restored_and_outputs_without_offsets_move_the_bookkeeping(parts) -> None:
    producer, store, clock = parts
    cp = checkpoint(parts, snapshot_partitions={("features", 0)})
    assert cp.snapshot_partitions == {("features", 0)}
    cp.assigned({("features", 0): 4, ("features", 1): 2}, {("features", 0): 6})
    cp.assigned({("features", 0): 9}, {})  # a partition with a position keeps it
    assert cp.processed == {("features", 0): 4, ("features", 1): 2}
    assert cp.committed == {("features", 0): 6}
    cp.restored(5)
    cp.restored(3)  # never numbered back
    assert cp.seq == 5
    cp.store({("features", 0): 7})
    clock.now = 1.0
    cp.commit_if_due()
    commits = cp.commits
    # a drift report alone (the last partial window) is something to commit, offsets unmoved
    cp.outputs_written()
    clock.now = 2.0
    cp.commit_if_due()
    assert cp.commits == commits + 1 and producer.log[-2:] == ["commit", "begin"]
    assert [seq for seq, _, _ in store.snapshots] == [6]  # after the restored one


def test_a_retriable_commit_failure_calls_commit_again_instead_of_aborting(parts) -> None:
    producer, _, _ = parts
    cp = checkpoint(parts)
    cp.store({("features", 0): 7})
    producer.fail_commit = TransactionError("timed out", abortable=False, retriable=True)
    cp.commit()
    assert "abort" not in producer.log and producer.log.count("commit") == 1
    assert cp.committed == {("features", 0): 7} and cp.commits == 1


class FakeOutputs:
    """An output producer with ``waiting`` records not acknowledged yet, and a group."""

    def __init__(self) -> None:
        self.log: list[Any] = []
        self.waiting = 0

    def in_flight(self) -> int:
        return self.waiting

    def flush(self, timeout: float = 30.0) -> None:
        self.log.append("flush")
        self.waiting = 0

    def commit(self, offsets: Any) -> bool:
        self.log.append([(o.topic, o.partition, o.offset) for o in offsets])
        return True


def test_a_due_commit_waits_for_its_outputs_without_blocking_then_flushes() -> None:
    from streamapp.checkpointing.checkpoint import DEFER_INTERVALS, OffsetCheckpoint

    outputs, clock = FakeOutputs(), FakeClock()
    checkpoint = OffsetCheckpoint(outputs, outputs, interval_s=1.0, clock=clock)
    checkpoint.store({("features", 0): 10})
    outputs.waiting = 5
    clock.now = 1.5  # due, but its outputs are on their way: not now, and no flush
    checkpoint.commit_if_due()
    assert outputs.log == [] and checkpoint.pending == {("features", 0): 10}
    outputs.waiting = 0  # acknowledged by themselves: committed
    checkpoint.commit_if_due()
    assert outputs.log == ["flush", [("features", 0, 10)]]  # a flush with nothing left is free
    checkpoint.store({("features", 0): 20})
    outputs.waiting = 3
    clock.now = 1.5 + DEFER_INTERVALS  # waited long enough: flush (blocking) and commit
    checkpoint.commit_if_due()
    assert outputs.log[-2:] == ["flush", [("features", 0, 20)]] and checkpoint.commits == 2


class SlowCommits(FakeOutputs):
    """Each flush (at-least-once) or transaction commit (exactly-once) blocks for 20 ms."""

    def flush(self, timeout: float = 30.0) -> None:
        time.sleep(0.02)  # the blocking commit is the scenario: its time is what is counted
        super().flush(timeout)


def test_the_time_blocked_in_commits_is_counted_in_both_modes(parts) -> None:
    from streamapp.checkpointing.checkpoint import OffsetCheckpoint

    outputs = SlowCommits()
    at_least_once = OffsetCheckpoint(outputs, outputs, interval_s=0)
    at_least_once.commit_if_due()  # nothing stored: no commit, no time
    assert at_least_once.commit_seconds == 0
    at_least_once.store({("features", 0): 10})
    at_least_once.commit_if_due()
    assert at_least_once.commit_seconds >= 0.02

    producer, _, _ = parts
    slow_commit = producer.commit_transaction

    def commit_transaction(timeout: float = 0) -> None:
        time.sleep(0.02)  # the blocking commit is the scenario: its time is what is counted
        slow_commit(timeout)

    producer.commit_transaction = commit_transaction  # type: ignore[method-assign]
    exactly_once = checkpoint(parts)
    exactly_once.store({("features", 0): 7})
    exactly_once.commit()
    assert exactly_once.commit_seconds >= 0.02
    # an aborted transaction blocked the loop as long: it counts too
    before = exactly_once.commit_seconds
    exactly_once.store({("features", 0): 9})
    producer.fail_commit = TransactionError("broker said no", abortable=True)
    with pytest.raises(TransactionError):
        exactly_once.commit()
    assert exactly_once.commit_seconds >= before + 0.02
