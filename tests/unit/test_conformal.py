"""Online conformal prediction sets (issue 34): the calibrator, and the sets as served."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamapp.assembly import build_pipeline
from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import Codec, DecodedBatch
from streamapp.conformal import (
    ConformalCalibrator,
    class_scores,
    prediction_sets,
    residual_scores,
    set_sizes,
)
from streamapp.events import FeatureBlock, Feedback, PredictionBlock, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.pipeline import Pipeline
from streamapp.scenarios import get_scenario
from streamapp.settings import ConformalSettings, DriftSettings, FinetuneSettings, Settings
from tests.conftest import assert_valid

# -- the calibrator ------------------------------------------------------------------------


def _stream(n: int, seed: int = 0, shift_at: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities of a 4-class model and labels drawn from them; after ``shift_at`` the
    model is overconfident (labels drawn from a flatter distribution than it says)."""
    rng = np.random.default_rng(seed)
    proba = rng.dirichlet(np.full(4, 0.5), size=n)
    truth = proba.copy()
    if shift_at is not None:
        truth[shift_at:] = 0.4 * truth[shift_at:] + 0.6 / 4
    labels = (rng.random(n)[:, None] > np.cumsum(truth, axis=1)).sum(axis=1)
    return proba, labels


def _serve(
    cal: ConformalCalibrator, proba: np.ndarray, labels: np.ndarray, cuts: list[int]
) -> np.ndarray:
    """Serve sets batch by batch (cut at ``cuts``), each batch's labels joining after it was
    scored; returns which labels their served set covered."""
    covered = []
    edges = [0, *cuts, len(labels)]
    for start, stop in itertools.pairwise(edges):
        served = np.full(stop - start, cal.threshold())
        rows = slice(start, stop)
        covered.append(
            cal.update(
                class_scores(proba[rows], labels[rows]), served, set_sizes(proba[rows], served)
            )
        )
    return np.concatenate(covered)


def test_the_level_is_aci_s_recurrence_and_the_threshold_its_conformal_quantile() -> None:
    proba, labels = _stream(700)
    cal = ConformalCalibrator(coverage=0.8, window=200, gamma=0.02)
    covered = _serve(cal, proba, labels, list(range(50, 700, 50)))
    alpha = 0.2  # the recurrence of Gibbs & Candès, label by label
    for hit in covered:
        alpha += 0.02 * (0.2 - (0.0 if hit else 1.0))
    assert cal.alpha_t == pytest.approx(alpha, abs=1e-12)
    recent = np.sort(class_scores(proba[-200:], labels[-200:]))
    rank = math.ceil(201 * (1 - cal.alpha_t))
    assert cal.threshold() == recent[rank - 1]


def test_the_state_does_not_depend_on_how_labels_were_batched() -> None:
    proba, labels = _stream(3000, seed=1)
    thresholds = np.random.default_rng(2).uniform(0.3, 0.9, 3000)  # as served, whenever
    scores, sizes = class_scores(proba, labels), set_sizes(proba, thresholds)
    states = []
    for cuts in ([], [1, 2, 500, 1999], list(range(7, 3000, 7))):
        cal = ConformalCalibrator(window=256)
        for start, stop in zip([0, *cuts], [*cuts, 3000], strict=True):
            cal.update(scores[start:stop], thresholds[start:stop], sizes[start:stop])
        states.append((encode_state(cal.state_dict()), cal.threshold(), cal.alpha_t))
    assert states[0] == states[1] == states[2]  # bitwise: a replay cuts batches differently


def test_long_run_coverage_holds_where_static_calibration_breaks() -> None:
    proba, labels = _stream(12_000, seed=3, shift_at=4000)
    cal = ConformalCalibrator(coverage=0.9, window=500, gamma=0.005)
    covered = _serve(cal, proba, labels, list(range(100, 12_000, 100)))
    assert abs(covered.mean() - 0.9) < 0.01
    after = covered[5000:].reshape(-1, 1000).mean(axis=1)
    assert np.abs(after - 0.9).max() < 0.05
    # split conformal, calibrated once on the first 500 labels, loses coverage after the shift
    scores = class_scores(proba, labels)
    fixed = np.sort(scores[:500])[math.ceil(501 * 0.9) - 1]
    assert (scores[5000:] <= fixed).mean() < 0.85


def test_an_empty_window_claims_nothing_and_a_full_level_gives_empty_sets() -> None:
    cal = ConformalCalibrator(coverage=0.9, window=50)
    assert cal.threshold() == math.inf and cal.summary()["threshold"] is None
    assert cal.summary()["sets"] == "all"
    empty = {"labels": 0, "coverage": None, "mean_size": None, "unbounded": 0}
    assert cal.summary()["recent"] == empty
    cal.update(np.zeros(5), np.full(5, math.inf), np.full(5, 4.0))  # too few for the level
    assert cal.threshold() == math.inf
    eager = ConformalCalibrator(coverage=0.9, window=50, gamma=1.0)
    eager.update(np.zeros(10), np.full(10, math.inf), np.full(10, 4.0))
    assert eager.alpha_t > 1 and eager.threshold() == -math.inf  # no class is plausible enough
    assert eager.summary()["threshold"] is None  # null, but not "every class"
    assert (cal.summary()["sets"], eager.summary()["sets"]) == ("all", "empty")
    assert not prediction_sets(np.array([[1.0, 0.0]]), np.array([-math.inf])).any()


def test_unbounded_intervals_are_counted_apart_from_the_mean_width() -> None:
    rng = np.random.default_rng(7)
    values, targets = rng.normal(size=600), rng.normal(size=600)
    cal = ConformalCalibrator(coverage=0.9, window=200)
    widths = []
    for start in range(0, 600, 20):  # the first batch is served unbounded: no labels yet
        half = np.full(20, cal.threshold())
        widths.append(2 * half)
        rows = slice(start, start + 20)
        cal.update(residual_scores(values[rows], targets[rows]), half, 2 * half)
    served = np.concatenate(widths)
    unbounded = int(np.isinf(served).sum())
    assert unbounded >= 20
    since = cal.summary()["since_start"]
    assert since["unbounded"] == unbounded and since["mean_size"] is not None
    assert since["mean_size"] == pytest.approx(served[np.isfinite(served)].mean())
    recent = cal.summary()["recent"]
    assert recent["unbounded"] == 0 and recent["mean_size"] == pytest.approx(served[-200:].mean())
    restored = ConformalCalibrator(coverage=0.9, window=200)
    restored.load_state_dict(decode_state(encode_state(cal.state_dict())))
    assert restored.summary() == cal.summary()


def test_rows_served_without_a_threshold_do_not_calibrate() -> None:
    cal = ConformalCalibrator(window=50)
    covered = cal.update(
        np.array([0.1, 0.9, 0.2]), np.array([np.nan, 0.5, 0.5]), np.array([1.0, 2.0, 1.0])
    )
    assert covered.tolist() == [False, False, True]  # one flag per row given
    assert (cal.labels, cal.misses) == (2, 1)


def test_nan_scores_are_misses_and_never_make_the_threshold_nan() -> None:
    cal = ConformalCalibrator(coverage=0.5, window=20, gamma=0.001)
    scores = np.linspace(0.0, 0.9, 20)
    scores[[3, 17]] = np.nan  # a model that gave NaN probabilities
    covered = cal.update(scores, np.full(20, np.inf), np.full(20, 2.0))
    assert not covered[[3, 17]].any() and covered.sum() == 18 and cal.misses == 2
    assert cal.threshold() == pytest.approx(np.sort(np.nan_to_num(scores, nan=9.0))[10])
    for _ in range(20):  # NaN scores only: the sets grow to everything, never to NaN
        cal.update(np.full(20, np.nan), np.full(20, cal.threshold()), np.full(20, 2.0))
        assert not math.isnan(cal.threshold())
    assert cal.threshold() == math.inf
    assert cal.summary()["threshold"] is None


def test_a_snapshot_restores_the_same_calibrator_and_a_smaller_window_keeps_the_newest() -> None:
    proba, labels = _stream(900, seed=4)
    cal = ConformalCalibrator(window=300)
    _serve(cal, proba, labels, list(range(100, 900, 100)))
    restored = ConformalCalibrator(window=300)
    restored.load_state_dict(decode_state(encode_state(cal.state_dict())))
    assert restored.summary() == cal.summary()
    assert encode_state(restored.state_dict()) == encode_state(cal.state_dict())
    smaller = ConformalCalibrator(window=100)
    smaller.load_state_dict(cal.state_dict())
    recent = class_scores(proba[-100:], labels[-100:])
    np.testing.assert_array_equal(smaller.state_dict()["scores"], recent)
    larger = ConformalCalibrator(window=1000)  # 900 labels, 300 scores: no zeros read as scores
    larger.load_state_dict(cal.state_dict())
    saved = cal.state_dict()
    assert larger.summary()["recent"] == cal.summary()["recent"]
    assert larger.threshold() == np.sort(saved["scores"])[math.ceil(301 * (1 - cal.alpha_t)) - 1]
    more_proba, more_labels = _stream(100, seed=6)
    _serve(larger, more_proba, more_labels, [50])
    new = class_scores(more_proba, more_labels)
    np.testing.assert_array_equal(
        larger.state_dict()["scores"], np.concatenate([saved["scores"], new])
    )
    assert larger.summary()["recent"]["labels"] == 400


def test_a_restore_under_another_coverage_or_gamma_restarts_the_level_at_the_new_alpha() -> None:
    proba, labels = _stream(4000, seed=5)
    cal = ConformalCalibrator(coverage=0.9, window=300)
    _serve(cal, proba, labels, list(range(100, 4000, 100)))
    state = decode_state(encode_state(cal.state_dict()))
    stricter = ConformalCalibrator(coverage=0.95, window=300)
    stricter.load_state_dict(state)
    # the counters read under 0.95 would give 0.05 + 0.005 * (4000 * 0.05 - ~400) < -0.9
    assert stricter.alpha_t == pytest.approx(0.05)
    assert (stricter.labels, stricter.misses) == (cal.labels, cal.misses)  # coverage kept
    np.testing.assert_array_equal(stricter.state_dict()["scores"], state["scores"])
    scores = np.sort(state["scores"])
    assert stricter.threshold() == scores[math.ceil(301 * 0.95) - 1]  # the window, at 0.95
    faster = ConformalCalibrator(coverage=0.9, window=300, gamma=0.05)
    faster.load_state_dict(state)
    assert faster.alpha_t == pytest.approx(0.1)
    same = ConformalCalibrator(coverage=0.9, window=300)
    same.load_state_dict(state)
    assert same.alpha_t == cal.alpha_t != pytest.approx(0.1)


# -- the sets as the pipeline serves them -------------------------------------------------

HEAD_ONLY = FinetuneSettings(layers=0)


def build(digits_bundle: Path, **conformal: object) -> Pipeline:
    settings = Settings(
        model={"bundle": digits_bundle},
        finetune=HEAD_ONLY,
        drift=DriftSettings(window_events=400),
        conformal=ConformalSettings(**conformal),  # type: ignore[arg-type]
    )
    return build_pipeline(settings, load_bundle(digits_bundle))


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y, phase = get_scenario("digits-shift").target_data(2400)  # shifts half-way
    assert (phase[:1200] == 0).all()
    return X[:1200].astype(np.float32), y[:1200]


def batch(X: np.ndarray, first: int, n: int, labels: list[Feedback] | None = None) -> DecodedBatch:
    ids = [f"e{k}" for k in range(first, first + n)]
    sources = [SourcePosition("features", 0, k) for k in range(first, first + n)]
    block = FeatureBlock(
        ids, [i.encode() for i in ids], X[first : first + n], np.full(n, 100.0), sources
    )
    return DecodedBatch(block, feedback=labels or [])


def feedback(y: np.ndarray, first: int, n: int) -> list[Feedback]:
    return [Feedback(f"e{k}", int(y[k]), 101.0) for k in range(first, first + n)]


def run(pipeline: Pipeline, X: np.ndarray, y: np.ndarray, cuts: list[int]) -> list[object]:
    """Score the events in batches cut at ``cuts``; each batch's labels join with the next."""
    outputs: list[object] = []
    edges = [0, *cuts, len(y)]
    previous: list[Feedback] = []
    for start, stop in itertools.pairwise(edges):
        outputs.append(pipeline.process(batch(X, start, stop - start, previous)))
        previous = feedback(y, start, stop - start)
    pipeline.process(DecodedBatch(FeatureBlock.empty(X.shape[1]), feedback=previous))
    return outputs


def codec(pipeline: Pipeline) -> Codec:
    classes = pipeline.monitor.classes
    return Codec(pipeline.monitor.feature_names, classes)


def test_predictions_carry_their_set_and_reports_its_coverage(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = digits
    pipeline = build(digits_bundle, window=200)
    outputs = run(pipeline, X, y, list(range(100, 1200, 100)))
    last = outputs[-1].predictions  # type: ignore[attr-defined]
    assert isinstance(last, PredictionBlock) and last.threshold is not None
    # served with the threshold the labels so far calibrated: a finite quantile by now
    assert np.isfinite(last.threshold).all() and (last.coverage == 0.9)
    docs = [orjson.loads(v) for _, v in codec(pipeline).encode_predictions(last, "m", "1")]
    for doc in docs:
        assert_valid("prediction", doc)
    mask = prediction_sets(last.proba, last.threshold)
    classes = pipeline.monitor.classes
    for doc, row in zip(docs, mask, strict=True):
        assert doc["prediction_set"] == {
            "classes": [c for c, inside in zip(classes, row, strict=True) if inside],
            "coverage": 0.9,
        }
    # informative: far from every class, and not empty throughout (a confident, accurate
    # model's sets are often one class or none at 90 %)
    assert 0 < np.mean([len(d["prediction_set"]["classes"]) for d in docs]) < len(classes) / 2
    report = pipeline.report(0.0)
    assert_valid("drift-report", report)
    conformal = report["conformal"]
    assert conformal["since_start"]["labels"] == 1200
    assert conformal["recent"]["labels"] == 200
    assert conformal["sets"] == "bounded" and 0 <= (conformal["threshold"] or -1) <= 1
    covered = conformal["since_start"]["coverage"]
    assert covered is not None and abs(covered - 0.9) < 0.05  # 1,200 labels: near the target


def test_a_redelivered_event_is_reemitted_with_the_set_it_was_served(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = digits
    pipeline = build(digits_bundle)
    first = pipeline.process(batch(X, 0, 300))
    pipeline.process(batch(X, 300, 300, feedback(y, 0, 300)))  # the threshold moves
    again = pipeline.process(batch(X, 0, 3))  # read again at the same positions
    served, reemitted = first.predictions, again.predictions
    assert served is not None and reemitted is not None and reemitted.threshold is not None
    encode = codec(pipeline).encode_predictions
    sets = [
        orjson.loads(v)["prediction_set"] for _, v in encode(served.take(np.arange(3)), "m", "1")
    ]
    assert [orjson.loads(v)["prediction_set"] for _, v in encode(reemitted, "m", "1")] == sets
    np.testing.assert_array_equal(reemitted.threshold, served.threshold[:3])
    assert pipeline.conformal is not None and pipeline.conformal.threshold() != served.threshold[0]


def test_labels_joined_in_other_batches_end_in_the_same_state(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    """What was served is in the ledger; from there, the calibrator's state depends on the
    labels' order only, not on how a live run or its replay cut them into batches."""
    X, y = digits
    served = build(digits_bundle)
    run(served, X[:300], y[:300], [100, 200])  # calibrated: finite thresholds from here
    for start in range(300, 900, 100):
        served.process(batch(X, start, 100))
    snapshot = encode_state(served.state_dict())
    states = []
    for cuts in ([300, 900], [300, 301, 555, 556, 700, 900], [*range(300, 900, 37), 900]):
        pipeline = build(digits_bundle)
        pipeline.load_state_dict(decode_state(snapshot))
        for start, stop in itertools.pairwise(cuts):
            pipeline.process(
                DecodedBatch(FeatureBlock.empty(64), feedback=feedback(y, start, stop - start))
            )
        assert pipeline.conformal is not None and pipeline.conformal.labels == 900
        states.append(encode_state(pipeline.conformal.state_dict()))
    assert states[0] == states[1] == states[2]


def test_a_snapshot_keeps_the_calibrator_and_an_older_one_starts_it_fresh(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    X, y = digits
    pipeline = build(digits_bundle)
    run(pipeline, X[:600], y[:600], [200, 400])
    pipeline.process(batch(X, 600, 100))  # pending: served, their labels still to come
    state = decode_state(encode_state(pipeline.state_dict()))
    restored = build(digits_bundle)
    restored.load_state_dict(state)
    ids = [f"e{k}" for k in (0, 450, 650)]  # joined, and pending: the served thresholds kept
    served = pipeline.ledger.served(ids).threshold
    assert np.isfinite(served[1:]).all() and len(set(served.tolist())) > 1
    np.testing.assert_array_equal(restored.ledger.served(ids).threshold, served)
    assert restored.conformal is not None and pipeline.conformal is not None
    assert restored.conformal.summary() == pipeline.conformal.summary()
    assert restored.conformal.summary()["since_start"]["labels"] == 600
    del state["conformal"]  # a snapshot written before conformal sets
    calibrator = restored.conformal  # the same object (whoever holds it sees the reset)
    restored.load_state_dict(state)
    assert restored.conformal is calibrator and calibrator.labels == 0
    assert calibrator.threshold() == math.inf and calibrator.summary()["sets"] == "all"


def test_without_conformal_sets_the_classification_formats_are_unchanged(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    X, _ = digits
    pipeline = build(digits_bundle, enabled=False)
    out = pipeline.process(batch(X, 0, 50, []))
    assert pipeline.conformal is None and out.predictions is not None
    assert out.predictions.threshold is None
    docs = [
        orjson.loads(v) for _, v in codec(pipeline).encode_predictions(out.predictions, "m", "1")
    ]
    assert all("prediction_set" not in doc for doc in docs)
    assert "conformal" not in pipeline.report(0.0) and "conformal" not in pipeline.state_dict()


def test_the_report_s_coverage_is_exported_as_gauges(
    digits_bundle: Path, digits: tuple[np.ndarray, np.ndarray]
) -> None:
    from streamapp.ops.metrics import WorkerMetrics
    from tests.unit.test_metrics import Source, a_pipeline, samples

    X, y = digits
    pipeline = build(digits_bundle)
    run(pipeline, X[:400], y[:400], [200])
    report = pipeline.report(0.0)
    source = Source(a_pipeline(), {})
    source.last_drift_report = lambda: report  # type: ignore[assignment,method-assign,return-value]
    scraped = samples(WorkerMetrics(source))  # type: ignore[arg-type]
    since_start = report["conformal"]["since_start"]
    assert scraped['streamapp_conformal_coverage{window="since_start"}'] == since_start["coverage"]
    assert scraped['streamapp_conformal_mean_size{window="recent"}'] == pytest.approx(
        report["conformal"]["recent"]["mean_size"]
    )
    assert scraped["streamapp_conformal_coverage_target"] == 0.9
