from __future__ import annotations

import numpy as np

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.events import Feedback, SourcePosition
from streamapp.ledger import PendingLedger, Seen


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
    assert ledger.finished == 5


def test_parked_labels_are_bounded_by_count_oldest_become_orphans() -> None:
    """200,000 labels for never-scored ids within seconds of stream time (issue 11, item 7)."""
    ledger = PendingLedger(10, 2, 3, ttl_s=100.0, early_label_ttl_s=60.0, max_parked=1_000)
    n = 200_000
    ledger.join([Feedback(f"ghost{i}", 0, i / 10_000) for i in range(n)])
    assert ledger.parked == 1_000
    assert ledger.counts.orphan == n - 1_000
    assert ledger.counts.as_dict() == {"joined": 0, "late": 0, "orphan": n - 1_000, "duplicate": 0}
    # the newest were kept: the last parked label still joins its event
    waiting = add(ledger, [f"ghost{n - 1}", "ghost0"])
    assert [fb.event_id for fb in waiting] == [f"ghost{n - 1}"]


def test_no_parking_when_max_parked_is_zero() -> None:
    ledger = PendingLedger(10, 2, 3, ttl_s=100.0, early_label_ttl_s=60.0, max_parked=0)
    ledger.join([Feedback("ghost", 0, 1.0)])
    assert ledger.parked == 0 and ledger.counts.orphan == 1


def test_label_outcomes_partition_the_labels() -> None:
    """joined + late + orphan + duplicate + parked == every label joined (issue 14, item 2)."""
    ledger = PendingLedger(4, 2, 3, ttl_s=10.0, early_label_ttl_s=5.0, max_parked=2)
    sent = 0

    def join(feedback: list[Feedback]) -> None:
        nonlocal sent
        sent += len(feedback)
        ledger.join(feedback)

    add(ledger, ["a", "b", "c"], ts=0.0)
    join([Feedback("a", 0, 1.0), Feedback("a", 0, 1.0)])  # joined, duplicate
    join([Feedback("p", 0, 1.0), Feedback("p", 0, 1.0)])  # parked, duplicate
    join([Feedback("q", 0, 1.0), Feedback("r", 0, 1.0)])  # parked; overflow: p an orphan
    add(ledger, ["d", "e", "f"], ts=2.0)  # evicts b (its label will be late)
    join([Feedback("b", 0, 3.0)])
    ledger.join(add(ledger, ["q"], ts=3.0))  # a parked label joins: not a second label
    ledger.expire(clock=20.0)  # r: an orphan; d, e, f expire
    join([Feedback("d", 1, 20.0), Feedback("s", 0, 20.0)])  # late, parked
    counts = ledger.counts.as_dict()
    assert counts == {"joined": 2, "late": 2, "orphan": 2, "duplicate": 2}
    assert ledger.parked == 1
    assert sum(counts.values()) + ledger.parked == sent
    assert ledger.event_counts.as_dict() == {"expired": 3, "evicted": 2}  # b, c


def test_positions_and_served_rows_survive_the_state_dict() -> None:
    ledger = make(max_entries=3)
    sources = [SourcePosition("features", 2, 40 + k) for k in range(5)]
    proba = np.array([[0.1, 0.2, 0.7]] * 5) + np.arange(5)[:, None] / 100
    # the served conformal thresholds (layout v3): finite, every class, no class, none known
    thresholds = np.array([0.4, np.inf, -np.inf, np.nan, 0.25])
    ledger.add(
        [f"e{k}" for k in range(5)],
        np.zeros((5, 2), np.float32),
        proba,
        np.arange(5.0),
        sources=sources,
        head_seq=np.arange(5) * 10,
        threshold=thresholds,
    )
    joined = ledger.join([Feedback("e4", 0, 9.0)])  # e0, e1 evicted, e4 joined: all remembered
    np.testing.assert_array_equal(joined.thresholds, [0.25])
    restored = make(max_entries=3)
    restored.load_state_dict(decode_state(encode_state(ledger.state_dict())))
    for k, source in enumerate(sources):
        assert restored.seen(f"e{k}", source) is Seen.REDELIVERED
        assert restored.seen(f"e{k}", SourcePosition("features", 2, 99)) is Seen.DUPLICATE
        assert restored.seen(f"e{k}", SourcePosition("other", 2, 40 + k)) is Seen.DUPLICATE
    assert restored.seen("e9", sources[0]) is Seen.NEW
    served = restored.served(["e0", "e3", "e4"])
    np.testing.assert_array_equal(served.proba, proba[[0, 3, 4]])
    assert served.head_seq.tolist() == [0, 30, 40] and served.event_ts.tolist() == [0.0, 3.0, 4.0]
    np.testing.assert_array_equal(
        restored.served([f"e{k}" for k in range(5)]).threshold, thresholds
    )
    assert restored.event_counts.evicted == 2 and restored.counts.joined == 1
    assert_same_state(restored.state_dict(), ledger.state_dict())


def test_an_older_snapshot_without_positions_loads() -> None:
    ledger = make()
    add(ledger, ["a", "b"])
    state = ledger.state_dict()
    for name in ("topics", "head_seq", "topic", "partition", "offset", "gone", "event_counts"):
        del state[name]
    state["counts"] = {**state["counts"], "parked": 0, "expired_events": 3, "evicted_events": 1}
    state["gone_why"] = []
    restored = make()
    restored.load_state_dict(state)
    assert len(restored) == 2 and restored.event_counts.as_dict() == {"expired": 3, "evicted": 1}
    assert restored.seen("a", SourcePosition("features", 0, 0)) is Seen.DUPLICATE


def assert_same_state(a: dict, b: dict) -> None:  # type: ignore[type-arg]
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], np.ndarray):
            nan = a[key].dtype.kind == "f"  # a row served without a conformal threshold: NaN
            assert a[key].dtype == b[key].dtype, key
            assert np.array_equal(a[key], b[key], equal_nan=nan), key
        else:
            assert a[key] == b[key], key


def test_adding_in_batches_is_adding_one_by_one() -> None:
    """Batches claim their slots at once when nothing is evicted (wrapping around the ring),
    one by one otherwise, and join their labels at once: the ledger ends the same as when
    each event and label comes alone."""
    rng = np.random.default_rng(5)
    batched, single = (make(max_entries=16, ttl=1.5, early=1.0) for _ in range(2))
    n = 0
    for round_ in range(40):
        size = 18 if round_ % 7 == 6 else int(rng.integers(1, 7))  # 18: beyond the ring
        ids = [f"e{n + i}" for i in range(size)]
        n += size
        emb = rng.normal(size=(size, 2)).astype(np.float32)
        proba = np.full((size, 3), 1 / 3, np.float32)
        sources = [SourcePosition("features", round_ % 2, n + i) for i in range(size)]
        batched.add(ids, emb, proba, np.full(size, float(round_)), sources=sources)
        for i in range(size):
            single.add(
                ids[i : i + 1],
                emb[i : i + 1],
                proba[i : i + 1],
                np.full(1, float(round_)),
                sources=sources[i : i + 1],
            )
        # labels for served, finished and future events, some twice in one batch
        chosen = rng.integers(0, n + 4, 4).tolist()
        labels = [Feedback(f"e{j}", 1, float(round_)) for j in [*chosen, chosen[0]]]
        batched.join(labels)
        for label in labels:
            single.join([label])
        batched.expire(float(round_))  # frees the oldest slots: later batches wrap around
        single.expire(float(round_))
    a, b = batched.state_dict(), single.state_dict()
    assert a["ids"] == b["ids"] and len(a["ids"]) > 0
    for key in ("emb", "proba", "ts", "partition", "offset", "gone_why"):
        np.testing.assert_array_equal(a[key], b[key])
    assert a["gone_ids"] == b["gone_ids"] and a["early_ids"] == b["early_ids"]
    np.testing.assert_array_equal(a["gone"]["proba"], b["gone"]["proba"])
    assert a["counts"] == b["counts"] and a["event_counts"] == b["event_counts"]
    assert min(a["counts"].values()) > 0, a["counts"]  # joined, late, duplicate, orphan
    assert batched.event_counts.evicted > 0 and batched.event_counts.expired > 0


def _snapshot_scenario() -> PendingLedger:
    """Evicted, expired, joined, late, duplicate, orphan and parked: each part of a snapshot."""
    ledger = PendingLedger(4, 2, 2, ttl_s=10.0, early_label_ttl_s=5.0)
    batches = (
        (["a", "b", "c"], 1, [[0.25, 0.75], [0.5, 0.5], [1.0, 0.0]], [0.0, 1.0, 2.0], [1, 1, 2]),
        (
            ["d", "e", "f"],
            -1,
            [[0.125, 0.875], [0.375, 0.625], [0.0, 1.0]],
            [12.0, 13.0, 14.0],
            [2, 2, 3],
        ),
    )
    positions = (
        [("in", 0, 10), ("in", 0, 11), ("other", 1, 7)],
        [("in", 0, 12), ("in", 1, 3), ("in", 1, 4)],
    )
    labels = ((["b", "z"], 3.0), (["q", "b", "a", "c"], 14.0))
    for (ids, sign, proba, ts, heads), where, (labelled, at) in zip(
        batches, positions, labels, strict=True
    ):
        emb = sign * np.arange(6, dtype=np.float32).reshape(3, 2) / 4
        sources = [SourcePosition(*position) for position in where]
        ledger.add(
            ids, emb, np.array(proba), np.array(ts), sources=sources, head_seq=np.array(heads)
        )
        ledger.expire(ts[-1])
        ledger.join([Feedback(event_id, 1, at) for event_id in labelled])
    return ledger


def _pending_rows(**columns: np.ndarray) -> dict[str, object]:
    """The pending part of the scenario's snapshot: d, e, f."""
    return {
        "ids": ["d", "e", "f"],
        "emb": -np.arange(6, dtype=np.float32).reshape(3, 2) / 4,
        "proba": np.array([[0.125, 0.875], [0.375, 0.625], [0.0, 1.0]]),
        "ts": np.array([12.0, 13.0, 14.0]),
        **columns,
    }


def _unknown(n: int) -> dict[str, np.ndarray]:
    return {
        "head_seq": np.zeros(n, np.int64),
        "topic": np.full(n, -1, np.int32),
        "partition": np.full(n, -1, np.int32),
        "offset": np.full(n, -1, np.int64),
    }


_PARKED_AND_COUNTS = {
    "early_ids": ["q"],
    "early_labels": np.array([1]),
    "early_ts": np.array([14.0]),
    "counts": {"joined": 1, "late": 2, "orphan": 1, "duplicate": 1},
    "event_counts": {"expired": 1, "evicted": 1},
}

# the scenario's snapshot as the code of commit 798265c (one ledger.py) wrote it: version 2
SNAPSHOT_798265C = {
    "topics": ["in", "other"],
    **_pending_rows(
        head_seq=np.array([2, 2, 3]),
        topic=np.array([0, 0, 0], np.int32),
        partition=np.array([0, 1, 1], np.int32),
        offset=np.array([12, 3, 4]),
    ),
    "gone_ids": ["b", "a", "c"],
    "gone_why": np.array([0, 2, 1], np.int8),
    "gone": {
        "proba": np.array([[0.5, 0.5], [0.25, 0.75], [1.0, 0.0]]),
        "ts": np.array([1.0, 0.0, 2.0]),
        "head_seq": np.array([1, 1, 2]),
        "topic": np.array([0, 0, 1], np.int32),
        "partition": np.array([0, 0, 1], np.int32),
        "offset": np.array([11, 10, 7]),
    },
    **_PARKED_AND_COUNTS,
}

# the same scenario (without positions) as the code of commit eb51bc9 wrote it: version 1
SNAPSHOT_EB51BC9 = {
    **_pending_rows(),
    "proba": np.array([[0.125, 0.875], [0.375, 0.625], [0.0, 1.0]], np.float32),
    "gone_ids": ["b", "a", "c"],
    "gone_why": ["joined", "evicted", "expired"],
    **{key: _PARKED_AND_COUNTS[key] for key in ("early_ids", "early_labels", "early_ts")},
    "counts": {
        **_PARKED_AND_COUNTS["counts"],
        "parked": 2,
        "expired_events": 1,
        "evicted_events": 1,
    },
}

# what the code of commit 798265c wrote after loading SNAPSHOT_EB51BC9
SNAPSHOT_EB51BC9_LOADED = {
    "topics": [],
    **_pending_rows(**_unknown(3)),
    "gone_ids": ["b", "a", "c"],
    "gone_why": np.array([0, 2, 1], np.int8),
    "gone": {"proba": np.zeros((3, 2)), "ts": np.zeros(3), **_unknown(3)},
    **_PARKED_AND_COUNTS,
}


def _with_thresholds(state: dict[str, object]) -> dict[str, object]:
    """A version 2 snapshot as version 3 writes it: no conformal threshold known (NaN), the
    column after the positions, in the pending rows and the finished ones."""

    def add(columns: dict[str, object], n: int) -> dict[str, object]:
        out: dict[str, object] = {}
        for key, value in columns.items():
            out[key] = value
            if key == "offset":
                out["threshold"] = np.full(n, np.nan)
        return out

    gone = state["gone"]
    assert isinstance(gone, dict)
    return {**add(state, 3), "gone": add(gone, 3)}


def test_a_snapshot_is_what_the_single_module_ledger_wrote() -> None:
    state = _snapshot_scenario().state_dict()
    expected = _with_thresholds(SNAPSHOT_798265C)
    assert list(state) == list(expected)  # the order of the encoded members too
    assert_same_state(state, expected)
    assert encode_state(state) == encode_state(expected)


def test_snapshots_of_older_layouts_load_as_the_single_module_ledger_loaded_them() -> None:
    for written, loaded in (
        (SNAPSHOT_798265C, _with_thresholds(SNAPSHOT_798265C)),
        (SNAPSHOT_EB51BC9, _with_thresholds(SNAPSHOT_EB51BC9_LOADED)),
    ):
        for state in (written, decode_state(encode_state(written))):
            restored = PendingLedger(4, 2, 2, ttl_s=10.0, early_label_ttl_s=5.0)
            restored.load_state_dict(state)
            assert_same_state(restored.state_dict(), loaded)
    assert SNAPSHOT_EB51BC9["gone_why"] == ["joined", "evicted", "expired"]  # left as it was
