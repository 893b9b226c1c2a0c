from __future__ import annotations

import numpy as np

from streamapp.events import Feedback
from streamapp.ledger import PendingLedger


def make(max_entries: int = 10, ttl: float = 100.0, early: float = 0.0) -> PendingLedger:
    return PendingLedger(
        max_entries, embedding_dim=2, n_classes=3, ttl_s=ttl, early_label_ttl_s=early
    )


def add(ledger: PendingLedger, ids: list[str], ts: float = 0.0) -> list[Feedback]:
    n = len(ids)
    emb = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 100 * len(ledger)
    proba = np.full((n, 3), 1 / 3, np.float32)
    return ledger.add(ids, emb, proba, np.full(n, ts))


def test_join_returns_exactly_the_served_embedding_and_probabilities() -> None:
    ledger = make()
    emb = np.array([[1.5, -2.0], [3.0, 4.0]], np.float32)
    proba = np.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]], np.float32)
    ledger.add(["a", "b"], emb, proba, np.array([10.0, 11.0]))
    joined = ledger.join([Feedback("b", 2, 15.0)])
    assert joined.event_ids == ["b"]
    np.testing.assert_array_equal(joined.embeddings, emb[[1]])
    np.testing.assert_array_equal(joined.proba, proba[[1]])
    assert joined.labels.tolist() == [2]
    assert joined.delays.tolist() == [4.0]
    assert len(ledger) == 1 and ledger.counts.joined == 1


def test_size_bound_evicts_oldest_and_their_labels_count_as_late() -> None:
    ledger = make(max_entries=3)
    add(ledger, ["a", "b", "c", "d", "e"])
    assert len(ledger) == 3
    assert ledger.event_counts.evicted == 2
    joined = ledger.join([Feedback("a", 0, 1.0), Feedback("e", 0, 1.0)])
    assert joined.event_ids == ["e"]
    assert ledger.counts.late == 1


def test_ttl_expires_on_the_stream_clock_and_late_labels_are_counted() -> None:
    ledger = make(ttl=10.0)
    add(ledger, ["old"], ts=0.0)
    add(ledger, ["new"], ts=8.0)
    ledger.expire(clock=12.0)  # horizon 2.0: "old" expires, "new" stays
    assert "old" in ledger and len(ledger) == 1
    joined = ledger.join([Feedback("old", 1, 12.0), Feedback("new", 1, 12.0)])
    assert joined.event_ids == ["new"]
    assert ledger.counts.late == 1 and ledger.event_counts.expired == 1


def test_duplicate_and_orphan_labels_are_counted_not_learned() -> None:
    ledger = make()
    add(ledger, ["a"])
    assert len(ledger.join([Feedback("a", 0, 1.0)])) == 1
    assert len(ledger.join([Feedback("a", 0, 2.0), Feedback("never", 0, 2.0)])) == 0
    assert ledger.counts.duplicate == 1
    assert ledger.counts.orphan == 1


def test_a_label_that_beats_its_event_waits_and_joins_when_it_is_scored() -> None:
    ledger = make(early=30.0)
    assert len(ledger.join([Feedback("a", 2, 5.0)])) == 0
    assert ledger.parked == 1
    waiting = add(ledger, ["a", "b"], ts=4.0)
    assert [(f.event_id, f.label) for f in waiting] == [("a", 2)]
    assert len(ledger.join(waiting)) == 1
    assert ledger.parked == 0 and ledger.counts.orphan == 0


def test_a_parked_label_whose_event_never_comes_becomes_an_orphan() -> None:
    ledger = make(early=30.0)
    ledger.join([Feedback("ghost", 0, 5.0)])
    ledger.expire(clock=20.0)
    assert ledger.parked == 1
    ledger.expire(clock=40.0)
    assert ledger.parked == 0 and ledger.counts.orphan == 1


def test_ring_buffer_reuses_slots_after_many_events() -> None:
    ledger = make(max_entries=4, ttl=1e9)
    for i in range(50):
        add(ledger, [f"e{i}"], ts=float(i))
        if i % 3 == 0:
            assert len(ledger.join([Feedback(f"e{i}", 1, float(i))])) == 1
    assert len(ledger) <= 4
    assert "e49" in ledger and "e48" in ledger  # e48 was joined: remembered as seen
    assert "e0" not in ledger  # the memory of seen ids is bounded too
    joined = ledger.join([Feedback("e49", 0, 50.0)])
    assert joined.embeddings.shape == (1, 2)


def test_seen_ids_memory_is_bounded() -> None:
    ledger = make(max_entries=5)
    for i in range(100):
        add(ledger, [f"e{i}"])
    assert len(ledger._gone) <= 5
