"""The regression pipeline on the friedman-shift scenario: predict then learn, the guard, the
intervals, the drift report, and a learning state that restores bitwise."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import DecodedBatch, encode_json
from streamapp.codec.avro_out import load_avro_schema
from streamapp.conformal import ConformalCalibrator
from streamapp.drift.stats import ReferenceProfile
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.ledger import PendingLedger
from streamapp.regression.guard import RegressionGuard
from streamapp.regression.head import LinearRegressionHead
from streamapp.regression.monitor import RegressionMonitor, value_bins
from streamapp.regression.pipeline import RegressionPipeline
from streamapp.regression.scenario import FriedmanShift, RandomFourierFeatures, ridge
from streamapp.settings import GuardSettings
from tests.conftest import assert_valid
from tests.unit.test_avro_drift_reports import as_written, round_trip

N, BATCH = 4000, 100


def _parts(seed: int = 0) -> tuple[RegressionPipeline, np.ndarray, np.ndarray]:
    scenario = FriedmanShift(seed=seed)
    Xs, ys = scenario.source_data(3000)
    rff = RandomFourierFeatures(Xs.shape[1], seed=seed)

    def embed(X: np.ndarray) -> np.ndarray:
        return np.hstack([X, rff(X)]).astype(np.float32)

    E = embed(Xs)
    coef, intercept = ridge(E.astype(np.float64), ys)
    head = LinearRegressionHead(coef, intercept, step_size=20)
    predicted = E @ coef + intercept
    cuts = np.quantile(predicted, np.linspace(0.1, 0.9, 9))
    profile = ReferenceProfile.from_data(Xs, value_bins(cuts, predicted), len(cuts) + 1)
    names = [f"x{i}" for i in range(Xs.shape[1])]
    source_mae = float(np.abs(predicted - ys).mean())
    pipeline = RegressionPipeline(
        embed,
        head,
        PendingLedger(10_000, E.shape[1], 1, 1e9, label_dtype=np.float64),
        RegressionMonitor(profile, names, cuts, scale=source_mae, window_events=1000),
        model_name="friedman",
        model_version="1",
        guard=RegressionGuard(GuardSettings(window=500, min_labels=100)),
        conformal=ConformalCalibrator(0.9, 500, 0.005),
        clock=lambda: 0.0,
    )
    X, y, _ = scenario.target_data(N)
    return pipeline, X.astype(np.float32), y


def _batch(X: np.ndarray, y: np.ndarray, start: int, labels: bool = True) -> DecodedBatch:
    ids = [f"e{i}" for i in range(start, start + len(X))]
    block = FeatureBlock(
        ids,
        [i.encode() for i in ids],
        X,
        np.arange(start, start + len(X), dtype=np.float64),
        [SourcePosition("features", 0, i) for i in range(start, start + len(X))],
    )
    feedback = [Feedback(i, float(v), float(start + len(X))) for i, v in zip(ids, y, strict=True)]
    return DecodedBatch(block, feedback if labels else [])


def _run(pipeline: RegressionPipeline, X: np.ndarray, y: np.ndarray, start: int = 0) -> list[float]:
    served = []
    for s in range(start, len(X), BATCH):
        out = pipeline.process(_batch(X[s : s + BATCH], y[s : s + BATCH], s))
        assert out.predictions is not None
        served.extend(out.predictions.proba[:, 0].tolist())
    return served


def test_served_values_learn_the_shift_and_beat_the_frozen_model_in_every_quarter() -> None:
    pipeline, X, y = _parts()
    served = np.asarray(_run(pipeline, X, y))
    frozen = pipeline.head.source_predict_many(pipeline.embed(X))
    for q in np.array_split(np.arange(N), 4):
        assert np.abs(served[q] - y[q]).mean() <= np.abs(frozen[q] - y[q]).mean() * 1.02
    assert np.abs(served[N // 2 :] - y[N // 2 :]).mean() < 0.8 * np.abs(frozen - y)[N // 2 :].mean()
    assert pipeline.head.n_learned == N


def test_report_says_mae_rmse_r2_intervals_and_detectors() -> None:
    pipeline, X, y = _parts()
    _run(pipeline, X, y)
    report = pipeline.report(0.0)
    perf = report["performance"]
    assert perf["labels_total"] == N
    assert 0 < perf["mae"] < perf["source_mae"]
    assert perf["rmse"] >= perf["mae"]
    assert perf["r2"] is not None and 0.5 < perf["r2"] <= 1
    assert set(perf["residual"]) == {"mean", "std", "p_value", "drifted"}
    assert set(report["prediction"]["counts"]) == set(pipeline.monitor.classes)
    conformal = report["conformal"]
    assert abs(conformal["since_start"]["coverage"] - 0.9) < 0.02
    assert conformal["since_start"]["mean_size"] > 0  # mean interval width
    assert report["guard"]["state"] == "adapted" and report["guard"]["adapted_mae"] is not None
    assert report["detectors"]["adwin"]["total"] >= 1  # the global drift half-way


def test_intervals_are_value_plus_minus_the_threshold_served() -> None:
    pipeline, X, y = _parts()
    _run(pipeline, X[:2000], y[:2000])
    out = pipeline.process(_batch(X[2000:2100], y[2000:2100], 2000, labels=False))
    assert out.predictions is not None
    q = out.predictions.threshold
    assert q is not None and np.isfinite(q).all() and (q == pipeline.conformal.threshold()).all()  # type: ignore[union-attr]


def test_guard_falls_back_to_the_source_model_when_learning_goes_wrong() -> None:
    pipeline, X, y = _parts()
    # a head pushed far off before serving: the paired test finds it worse than the source
    pipeline.head.learn_many(pipeline.embed(X[:400]), y[:400] * 5 + 20)
    _run(pipeline, X[:1000], y[:1000])
    assert pipeline.guard is not None and pipeline.guard.decisions["fallback"] >= 1
    out = pipeline.process(_batch(X[1000:1100], y[1000:1100], 1000, labels=False))
    assert out.predictions is not None
    assert set(out.predictions.model_states()) == {"source"}
    frozen = pipeline.head.source_predict_many(pipeline.embed(X[1000:1100]))
    np.testing.assert_allclose(out.predictions.proba[:, 0], frozen)


@pytest.mark.parametrize("cut", [1700, 2350])
def test_learning_state_restores_bitwise_whatever_the_batches(cut: int) -> None:
    straight, X, y = _parts()
    served = _run(straight, X, y)
    first, _, _ = _parts()
    head_part = _run(first, X[:cut], y[:cut])
    state = decode_state(encode_state(first.state_dict()))  # as a snapshot stores it
    resumed, _, _ = _parts()
    resumed.load_state_dict(state)
    rest = []
    for s in range(cut, N, 250):  # other batch boundaries than the straight run's
        out = resumed.process(_batch(X[s : s + 250], y[s : s + 250], s))
        assert out.predictions is not None
        rest.extend(out.predictions.proba[:, 0].tolist())
    # the ridge steps are batch-invariant; the served values differ only by which head
    # served each batch, so compare the learning state at the end
    assert resumed.head.n_learned == straight.head.n_learned
    np.testing.assert_array_equal(resumed.head.coef, straight.head.coef)
    assert resumed.head.intercept == straight.head.intercept
    assert len(head_part) + len(rest) == len(served)
    assert resumed.report(0.0)["performance"]["labels_total"] == N


def test_redelivered_events_are_re_emitted_as_served() -> None:
    pipeline, X, y = _parts()
    first = pipeline.process(_batch(X[:100], y[:100], 0, labels=False))
    again = pipeline.process(_batch(X[:100], y[:100], 0, labels=False))
    assert first.predictions is not None and again.predictions is not None
    np.testing.assert_array_equal(first.predictions.proba, again.predictions.proba)
    assert pipeline.stats.redelivered == 100 and pipeline.stats.events_scored == 100


def test_reports_hold_to_the_json_schema_and_round_trip_through_the_avro_twin() -> None:
    pipeline, X, y = _parts()
    reports = [pipeline.report(0.0)]  # before any label: no measure, no guard MAE
    for s in range(0, 2000, BATCH):
        reports += pipeline.process(_batch(X[s : s + BATCH], y[s : s + BATCH], s)).drift_reports
    reports.append(pipeline.report(1.0))
    assert len(reports) >= 3 and "mae" in reports[-1]["performance"]
    assert "mae" not in reports[0]["performance"] and "adapted_mae" not in reports[0]["guard"]
    twin = load_avro_schema("drift-report")
    for report in reports:
        document = orjson.loads(encode_json(report))
        assert_valid("drift-report", document)
        assert as_written(round_trip(twin, document), document) == document


def test_fine_tuning_learns_on_huber_loss_and_restores_bitwise_whatever_the_batches() -> None:
    import torch
    from torch import nn

    from streamapp.regression.finetune import RegressionFinetuneHead

    torch.manual_seed(0)
    top = nn.Sequential(nn.Linear(10, 16), nn.ReLU())
    X = np.random.default_rng(0).normal(size=(1200, 10))
    y = 5.0 * np.sin(X[:, 0]) + X[:, 1] ** 2 + 2.0

    def head() -> RegressionFinetuneHead:
        return RegressionFinetuneHead(
            top, np.zeros((1, 16)), np.zeros(1), loss="huber", huber_delta=2.0, step_size=25
        )

    straight, split = head(), head()
    for s in range(0, 1200, 100):
        straight.learn_many(X[s : s + 100], y[s : s + 100])
    split.learn_many(X[:430], y[:430])
    resumed = head()
    resumed.load_state_dict(decode_state(encode_state({"h": split.state_dict()}))["h"])
    assert resumed.pending == 430 % 25
    for s in range(430, 1200, 70):
        resumed.learn_many(X[s : s + 70], y[s : s + 70])
    np.testing.assert_array_equal(resumed.predict_many(X), straight.predict_many(X))
    before = np.abs(head().predict_many(X) - y).mean()
    assert np.abs(straight.predict_many(X) - y).mean() < 0.5 * before
    np.testing.assert_array_equal(straight.source_predict_many(X), np.zeros(1200))


def test_values_that_are_not_finite_are_served_as_the_typical_value_and_not_learned() -> None:
    pipeline, X, y = _parts()
    inner = pipeline.embed

    def embed(rows: np.ndarray) -> np.ndarray:  # an input at the edge of float range
        out = inner(rows)
        out[rows[:, 0] > 0.99] = np.inf
        return out

    pipeline.embed = embed
    served = np.asarray(_run(pipeline, X[:1000], y[:1000]))
    broken = X[:1000, 0] > 0.99
    assert broken.any() and np.isfinite(served).all()
    assert (served[broken] == pipeline.monitor.typical_value).all()
    assert pipeline.head.n_learned == 1000 - broken.sum()  # the rest, learned
    assert np.isfinite(pipeline.head.coef).all()


def test_a_ridge_step_that_overflows_is_skipped_and_learning_goes_on() -> None:
    head = LinearRegressionHead(np.array([1.0, 2.0]), 0.5, step_size=5)
    head.learn_many(np.full((5, 2), 1e160), np.full(5, 1e160))  # squares overflow to inf
    assert head.coef.tolist() == [1.0, 2.0] and head.intercept == 0.5 and head.n_learned == 5
    X = np.random.default_rng(0).normal(size=(400, 2))
    head.learn_many(X, X @ np.array([3.0, -1.0]) + 2.0)  # the sums were not poisoned
    assert np.allclose(head.coef, [3.0, -1.0], atol=0.15) and abs(head.intercept - 2.0) < 0.15
