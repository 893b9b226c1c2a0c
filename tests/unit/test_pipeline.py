from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.assembly import build_pipeline
from streamapp.codec import DecodedBatch
from streamapp.events import DeadLetter, FeatureBlock, Feedback, Reason, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.pipeline import Pipeline
from streamapp.settings import DriftSettings, FinetuneSettings, LedgerSettings, Settings
from tests.conftest import assert_valid


@pytest.fixture
def pipeline(digits_bundle: Path) -> Pipeline:
    settings = Settings(
        model={"bundle": digits_bundle}, drift=DriftSettings(window_events=20), finetune=HEAD_ONLY
    )
    return build_pipeline(settings, load_bundle(digits_bundle))


HEAD_ONLY = FinetuneSettings(layers=0)


def block(ids: list[str], X: np.ndarray, ts: float = 100.0) -> FeatureBlock:
    n = len(ids)
    return FeatureBlock(
        ids,
        [i.encode() for i in ids],
        X.astype(np.float32),
        np.full(n, ts),
        [SourcePosition("features", 0, k) for k in range(n)],
    )


def test_predict_before_learn_within_one_batch(pipeline: Pipeline) -> None:
    X = np.random.default_rng(0).uniform(0, 16, size=(5, 64))
    labels = [Feedback(f"e{i}", i % 10, 101.0) for i in range(5)]
    out = pipeline.process(DecodedBatch(block([f"e{i}" for i in range(5)], X), feedback=labels))
    assert out.predictions is not None
    assert (out.predictions.head_seq == 0).all()  # scored before the batch's labels were learned
    assert pipeline.head.n_learned == 5
    assert pipeline.ledger.counts.joined == 5


def test_predictions_are_handed_over_before_the_batch_is_learned(pipeline: Pipeline) -> None:
    X = np.random.default_rng(0).uniform(0, 16, size=(4, 64))
    labels = [Feedback(f"e{i}", i % 10, 101.0) for i in range(4)]
    scored = pipeline.score(DecodedBatch(block([f"e{i}" for i in range(4)], X), feedback=labels))
    handed = (
        scored.predictions,
        pipeline.head.n_learned,
        len(pipeline.ledger),
        pipeline.stats.events_scored,
    )
    out = pipeline.learn(scored)
    # the worker produces them at that point: the same block the outputs hold, no label
    # learned, and the ledger and drift work still to come (off the predictions' latency)
    assert handed == (out.predictions, 0, 0, 0)
    assert pipeline.stats.events_scored == 4
    assert pipeline.head.n_learned == 4
    no_events = DecodedBatch(FeatureBlock.empty(64), feedback=[Feedback("e0", 1, 102.0)])
    scored = pipeline.score(no_events)
    assert scored.predictions is None  # nothing scored, nothing handed over
    pipeline.learn(scored)


def test_learning_uses_the_served_embedding(pipeline: Pipeline) -> None:
    X = np.random.default_rng(1).uniform(0, 16, size=(3, 64))
    pipeline.process(DecodedBatch(block(["a", "b", "c"], X)))
    served = pipeline.embed(X)
    seen = []
    original = pipeline.head.learn_many
    pipeline.head.learn_many = lambda E, y: (seen.append(E.copy()), original(E, y))  # type: ignore[method-assign]
    pipeline.process(DecodedBatch(FeatureBlock.empty(64), feedback=[Feedback("b", 3, 101.0)]))
    np.testing.assert_array_equal(seen[0], served[[1]])


def test_duplicate_event_ids_are_dead_lettered_not_rescored(pipeline: Pipeline) -> None:
    X = np.zeros((2, 64))
    pipeline.process(DecodedBatch(block(["a", "b"], X)))
    out = pipeline.process(DecodedBatch(block(["b", "c", "c"], np.zeros((3, 64)))))
    assert out.predictions is not None and out.predictions.ids == ["c"]
    assert [d.reason for d in out.dead_letters] == [Reason.DUPLICATE_EVENT] * 2
    assert pipeline.stats.dead_letters["duplicate_event"] == 2


def test_drift_report_is_due_by_count_and_schema_valid(pipeline: Pipeline) -> None:
    X = np.random.default_rng(2).uniform(0, 16, size=(25, 64))
    feedback = [Feedback(f"e{i}", i % 10, 100.5) for i in range(25)]
    out = pipeline.process(DecodedBatch(block([f"e{i}" for i in range(25)], X), feedback=feedback))
    [report] = out.drift_reports
    assert_valid("drift-report", report)
    assert report["window"]["events"] == 25
    assert report["model"]["head_seq"] == 25
    assert report["labels"]["joined"] == 25
    assert report["performance"]["labels"] == 25
    assert pytest.approx(report["performance"]["label_delay_s"]["p50"]) == 0.5


def test_labels_past_the_ttl_are_late(pipeline: Pipeline) -> None:
    pipeline.process(DecodedBatch(block(["old"], np.zeros((1, 64)), ts=0.0)))
    # a much later event moves the stream clock past the old event's TTL
    pipeline.process(DecodedBatch(block(["new"], np.zeros((1, 64)), ts=10_000.0)))
    pipeline.process(DecodedBatch(FeatureBlock.empty(64), feedback=[Feedback("old", 1, 10_001.0)]))
    assert pipeline.ledger.counts.late == 1
    assert pipeline.head.n_learned == 0


def test_a_report_counts_the_batch_it_closes(pipeline: Pipeline) -> None:
    """The first report showed ``dead_letters: {}`` for the batch that made 24 (issue 11)."""
    rejects = [
        DeadLetter(SourcePosition("features", 0, 100 + k), None, Reason.SCHEMA, "bad", b"{}")
        for k in range(24)
    ]
    X = np.random.default_rng(3).uniform(0, 16, size=(20, 64))
    batch = DecodedBatch(block([f"e{i}" for i in range(20)], X), dead_letters=rejects)
    [report] = pipeline.process(batch).drift_reports
    assert report["counters"]["dead_letters"] == {"schema": 24}
    assert report["counters"]["batches"] == 1
    assert report["counters"]["events_scored"] == 20


def test_final_report_is_the_partial_window_or_none(pipeline: Pipeline) -> None:
    assert pipeline.final_report(50.0) is None  # nothing scored yet
    X = np.random.default_rng(4).uniform(0, 16, size=(7, 64))
    pipeline.process(DecodedBatch(block([f"e{i}" for i in range(7)], X)))
    report = pipeline.final_report(60.0)
    assert report is not None
    assert_valid("drift-report", report)
    assert report["window"]["events"] == 7 and report["ts"] == 60.0
    assert pipeline.final_report(61.0) is None  # the window it reported is closed


def test_label_outcomes_add_up_to_the_labels_received(digits_bundle: Path) -> None:
    """joined + late + orphan + duplicate + parked == feedback received (issue 14, item 2)."""
    settings = Settings(
        finetune=HEAD_ONLY,  # these tests count every joined label as learned
        model={"bundle": digits_bundle},
        drift=DriftSettings(window_events=30),
        ledger=LedgerSettings(max_entries=20, ttl_s=50.0, early_label_ttl_s=10.0, max_parked=3),
    )
    pipeline = build_pipeline(settings, load_bundle(digits_bundle))
    X = np.random.default_rng(5).uniform(0, 16, size=(30, 64))
    ids = [f"e{i}" for i in range(30)]
    reports = []
    steps = [
        (block(ids[:10], X[:10], ts=0.0), [Feedback(i, 1, 1.0) for i in ids[:5] * 2]),
        (block(ids[10:30], X[10:30], ts=5.0), [Feedback(f"x{i}", 2, 5.0) for i in range(6)]),
        (FeatureBlock.empty(64), [Feedback(i, 0, 100.0) for i in ids[5:12]]),  # late
        (FeatureBlock.empty(64), [Feedback("y", 0, 100.0), Feedback("y", 0, 100.0)]),
    ]
    for features, feedback in steps:
        out = pipeline.process(DecodedBatch(features, feedback=feedback))
        reports += out.drift_reports
    counts = pipeline.ledger.counts
    assert min(counts.joined, counts.late, counts.orphan, counts.duplicate) > 0
    assert pipeline.ledger.parked == 1
    outcomes = sum(counts.as_dict().values()) + pipeline.ledger.parked
    assert outcomes == pipeline.stats.feedback_received == 25
    assert reports  # the report of a full window, and one now: the counters are cumulative
    final = pipeline.report(200.0)
    assert_valid("drift-report", final)
    labels = final["labels"]
    assert sum(labels[k] for k in ("joined", "late", "orphan", "duplicate", "parked")) == 25
    assert set(final["events"]) == {"expired", "evicted", "redelivered"}
