from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.codec import DecodedBatch
from streamapp.events import FeatureBlock, Feedback, Reason, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.pipeline import Pipeline
from streamapp.settings import DriftSettings, Settings
from streamapp.worker import build_pipeline
from tests.conftest import assert_valid


@pytest.fixture
def pipeline(digits_bundle: Path) -> Pipeline:
    settings = Settings(bundle=digits_bundle, drift=DriftSettings(window_events=20))
    return build_pipeline(settings, load_bundle(digits_bundle))


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
