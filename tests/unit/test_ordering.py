from __future__ import annotations

from streamapp.ordering import TimestampMerger
from tests.fakes import FakeClock, FakeMessage


def test_backlog_of_two_topics_is_interleaved_by_timestamp() -> None:
    merger = TimestampMerger({"features": 0, "feedback": 1})
    merger.assign([("features", 0), ("feedback", 0)])
    # fetched first, all of it
    merger.add([FakeMessage("features", 0, i, 10 * i) for i in range(5)])
    merger.add([FakeMessage("feedback", 0, i, 10 * i + 15) for i in range(5)])
    merger.caught_up(("features", 0))
    merger.caught_up(("feedback", 0))
    order = [(m.topic()[0:4], m.timestamp()[1]) for m in merger.take(100)]
    assert [ts for _, ts in order] == sorted(ts for _, ts in order)
    assert order[:3] == [("feat", 0), ("feat", 10), ("feed", 15)]


def test_equal_timestamps_put_the_event_before_its_label() -> None:
    merger = TimestampMerger({"features": 0, "feedback": 1})
    merger.assign([("features", 0), ("feedback", 0)])
    merger.add([FakeMessage("feedback", 0, 0, 5), FakeMessage("features", 0, 0, 5)])
    merger.caught_up(("features", 0))
    assert [m.topic() for m in merger.take(10)] == ["features", "feedback"]


def test_a_quiet_partition_holds_others_back_only_for_max_idle() -> None:
    clock = FakeClock()
    merger = TimestampMerger(max_idle_s=0.5, clock=clock)
    merger.assign([("a", 0), ("b", 0)])
    merger.add([FakeMessage("a", 0, 0, 1)])
    assert merger.take(10) == []
    clock.now = 0.6
    assert len(merger.take(10)) == 1


def test_per_partition_offset_order_is_kept_even_with_out_of_order_timestamps() -> None:
    merger = TimestampMerger()
    merger.assign([("a", 0)])
    merger.add([FakeMessage("a", 0, 0, 50), FakeMessage("a", 0, 1, 10)])
    merger.caught_up(("a", 0))
    assert [m.offset() for m in merger.take(10)] == [0, 1]


def test_revoke_returns_unprocessed_messages_and_unblocks() -> None:
    merger = TimestampMerger()
    merger.assign([("a", 0), ("b", 0)])
    merger.add([FakeMessage("a", 0, 0, 1), FakeMessage("b", 0, 0, 2)])
    dropped = merger.revoke([("b", 0)])
    assert [m.offset() for m in dropped] == [0]
    merger.caught_up(("a", 0))
    assert len(merger.take(10)) == 1
    assert len(merger) == 0


def test_full_partitions_are_reported_for_backpressure() -> None:
    merger = TimestampMerger(max_buffered=3)
    merger.assign([("a", 0), ("b", 0)])
    merger.add([FakeMessage("a", 0, i, i) for i in range(5)])
    assert merger.full() == [("a", 0)]


def test_add_returns_each_partitions_next_offset_and_clears_its_end_mark() -> None:
    merger = TimestampMerger()
    merger.assign([("a", 0), ("a", 1), ("b", 0)])
    merger.caught_up(("a", 0))
    merger.caught_up(("b", 0))
    fetched = [
        FakeMessage("a", 0, 7, 1),
        FakeMessage("a", 1, 3, 2),
        FakeMessage("a", 0, 8, 3),
        FakeMessage("a", 1, 4, 4),
    ]
    assert merger.add(fetched) == {("a", 0): 9, ("a", 1): 5}
    assert merger.waiting_on() == []  # b[0] stays caught up: nothing new came from it
    # a[0] runs empty after 8 and is not known to be at its end: it holds a[1]@4 back
    assert [m.offset() for m in merger.take(10)] == [7, 3, 8]
    assert merger.waiting_on() == [("a", 0)]


def test_strict_a_partition_at_its_end_holds_the_others_until_it_delivers_or_is_quiet() -> None:
    # a leader failover: b[0] looked caught up, then its producer's retries land with an
    # earlier timestamp than a[0]'s next record; strict, the event-time order survives
    clock = FakeClock()
    merger = TimestampMerger(max_idle_s=5.0, strict=True, clock=clock)
    merger.assign([("a", 0), ("b", 0)])
    merger.add([FakeMessage("a", 0, 0, 20)])
    merger.caught_up(("b", 0))
    assert merger.take(10) == []
    assert merger.waiting_on() == [("b", 0)]
    clock.now = 3.0
    merger.add([FakeMessage("b", 0, 0, 10)])  # the new leader serves the retried record
    assert [(m.topic(), m.timestamp()[1]) for m in merger.take(10)] == [("b", 10)]
    clock.now = 8.1  # b[0] quiet for max_idle_s since it ran empty: a[0] goes on
    assert [(m.topic(), m.timestamp()[1]) for m in merger.take(10)] == [("a", 20)]


def test_not_strict_a_partition_at_its_end_holds_nothing_back() -> None:
    merger = TimestampMerger(max_idle_s=5.0, clock=FakeClock())
    merger.assign([("a", 0), ("b", 0)])
    merger.add([FakeMessage("a", 0, 0, 20)])
    merger.caught_up(("b", 0))
    assert len(merger.take(10)) == 1
