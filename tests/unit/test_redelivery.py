"""Redelivery is not bad input (issue 11, item 5).

An event read again at the position it was first read from is re-emitted as first served,
never dead-lettered, never scored, monitored or learned twice; the same ``event_id`` at
another position stays a ``duplicate_event`` dead letter.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.assembly import build_pipeline
from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import DecodedBatch
from streamapp.events import (
    FeatureBlock,
    Feedback,
    Outputs,
    PredictionBlock,
    Reason,
    SourcePosition,
)
from streamapp.model.bundle import load_bundle
from streamapp.pipeline import Pipeline
from streamapp.settings import DriftSettings, FinetuneSettings, LedgerSettings, Settings

HEAD_ONLY = FinetuneSettings(layers=0)


def events(first: int, n: int, ts: float = 100.0, partition: int = 0) -> FeatureBlock:
    """``e<first>..`` at offsets ``first..`` of ``features[partition]``."""
    ids = [f"e{k}" for k in range(first, first + n)]
    X = np.random.default_rng(first).uniform(0, 16, (n, 64)).astype(np.float32)
    sources = [SourcePosition("features", partition, k) for k in range(first, first + n)]
    return FeatureBlock(ids, [i.encode() for i in ids], X, np.full(n, ts), sources)


def cat(*blocks: FeatureBlock) -> FeatureBlock:
    return FeatureBlock.concat(blocks)


def labels(first: int, n: int, ts: float = 101.0) -> list[Feedback]:
    return [Feedback(f"e{k}", k % 10, ts) for k in range(first, first + n)]


def build(digits_bundle: Path, **ledger: object) -> Pipeline:
    settings = Settings(
        finetune=HEAD_ONLY,  # these tests count every joined label as learned
        model={"bundle": digits_bundle},
        drift=DriftSettings(window_events=1000),
        ledger=LedgerSettings(**ledger),  # type: ignore[arg-type]
    )
    return build_pipeline(settings, load_bundle(digits_bundle))


@pytest.fixture
def pipeline(digits_bundle: Path) -> Pipeline:
    return build(digits_bundle)


def process(
    pipeline: Pipeline, block: FeatureBlock, feedback: list[Feedback] | None = None
) -> Outputs:
    return pipeline.process(DecodedBatch(block, feedback=feedback or []))


def assert_reemitted(again: PredictionBlock | None, first: PredictionBlock) -> None:
    """The same probabilities, label, event time and head_seq as first served."""
    assert again is not None
    assert again.ids == first.ids and again.keys == first.keys
    np.testing.assert_array_equal(again.proba, first.proba)
    np.testing.assert_array_equal(again.labels, first.labels)
    np.testing.assert_array_equal(again.event_ts, first.event_ts)
    np.testing.assert_array_equal(again.head_seq, first.head_seq)
    assert again.sources == first.sources


def test_a_redelivered_pending_event_is_reemitted_not_dead_lettered(pipeline: Pipeline) -> None:
    first = process(pipeline, events(0, 10)).predictions
    assert first is not None
    process(pipeline, events(10, 5), labels(10, 5))  # the head learns in between
    assert pipeline.head.n_learned == 5
    window_before = pipeline.monitor.events_in_window

    out = process(pipeline, events(0, 10))

    assert out.dead_letters == []
    assert_reemitted(out.predictions, first)
    assert (out.predictions.head_seq == 0).all()  # type: ignore[union-attr]
    assert pipeline.stats.redelivered == 10
    assert pipeline.stats.events_scored == 15  # not scored again
    assert pipeline.monitor.events_in_window == window_before  # not counted twice in drift
    assert len(pipeline.ledger) == 10


def test_a_redelivered_event_whose_label_joined_is_reemitted_and_not_learned_twice(
    pipeline: Pipeline,
) -> None:
    first = process(pipeline, events(0, 8), labels(0, 8)).predictions
    assert first is not None and pipeline.head.n_learned == 8

    # the whole batch again, events and labels (a consumer that lost its partitions)
    out = process(pipeline, events(0, 8), labels(0, 8))

    assert out.dead_letters == [] and out.joined is None
    assert_reemitted(out.predictions, first)
    assert pipeline.head.n_learned == 8
    assert pipeline.ledger.counts.joined == 8 and pipeline.ledger.counts.duplicate == 8
    assert pipeline.stats.redelivered == 8


def test_redelivered_after_expiry_and_eviction_is_still_reemitted(digits_bundle: Path) -> None:
    pipeline = build(digits_bundle, max_entries=10, ttl_s=50.0)
    first = process(pipeline, events(0, 5, ts=0.0)).predictions
    evicted_first = process(pipeline, events(5, 2, ts=100.0)).predictions  # e0..e4 expire
    process(pipeline, events(7, 10, ts=100.0))  # e5, e6 evicted
    assert first is not None and evicted_first is not None
    assert pipeline.ledger.event_counts.as_dict() == {"expired": 5, "evicted": 2}

    out = process(pipeline, cat(events(0, 5, ts=0.0), events(5, 2)))

    assert out.dead_letters == []
    assert out.predictions is not None and out.predictions.ids == [f"e{k}" for k in range(7)]
    np.testing.assert_array_equal(out.predictions.proba[:5], first.proba)
    np.testing.assert_array_equal(out.predictions.proba[5:], evicted_first.proba)
    assert pipeline.stats.redelivered == 7 and pipeline.stats.events_scored == 17


def test_the_same_id_at_another_offset_is_a_duplicate(pipeline: Pipeline) -> None:
    process(pipeline, events(0, 3))
    elsewhere = events(0, 3, partition=1)  # same ids, other positions
    out = process(pipeline, elsewhere)
    assert out.predictions is None
    assert [d.reason for d in out.dead_letters] == [Reason.DUPLICATE_EVENT] * 3
    assert [d.source for d in out.dead_letters] == elsewhere.sources
    assert pipeline.stats.redelivered == 0


def test_a_mixed_batch_keeps_input_order(pipeline: Pipeline) -> None:
    first = process(pipeline, events(0, 4)).predictions
    assert first is not None
    new, again = events(4, 3), events(0, 4)
    mixed = FeatureBlock(
        [new.ids[0], again.ids[0], new.ids[1], again.ids[3], new.ids[2]],
        [new.keys[0], again.keys[0], new.keys[1], again.keys[3], new.keys[2]],
        np.stack([new.X[0], again.X[0], new.X[1], again.X[3], new.X[2]]),
        np.full(5, 100.0),
        [new.sources[0], again.sources[0], new.sources[1], again.sources[3], new.sources[2]],
    )
    out = process(pipeline, mixed)
    assert out.predictions is not None
    assert out.predictions.ids == ["e4", "e0", "e5", "e3", "e6"]
    np.testing.assert_array_equal(out.predictions.proba[[1, 3]], first.proba[[0, 3]])
    assert out.predictions.sources == mixed.sources
    assert pipeline.stats.redelivered == 2 and pipeline.stats.events_scored == 7


def test_redelivery_is_recognised_after_a_restore(pipeline: Pipeline, digits_bundle: Path) -> None:
    first = process(pipeline, events(0, 6), labels(0, 3)).predictions  # 3 joined, 3 pending
    assert first is not None
    restored = build(digits_bundle)
    restored.load_state_dict(decode_state(encode_state(pipeline.state_dict())))
    out = process(restored, events(0, 6))
    assert out.dead_letters == []
    assert_reemitted(out.predictions, first)
    assert restored.stats.redelivered == 6


def test_redelivered_is_counted_in_reports(pipeline: Pipeline) -> None:
    process(pipeline, events(0, 5))
    process(pipeline, events(0, 5))
    report = pipeline.final_report(200.0)
    assert report is not None
    assert report["events"]["redelivered"] == 5 and report["counters"]["redelivered"] == 5
    assert report["window"]["events"] == 5
