"""The safe-adaptation guard: fallback with hysteresis, rollback of a diverged head, per-row
serving state on predictions, and its place in drift reports and snapshots."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from scipy import stats

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import Codec, DecodedBatch
from streamapp.drift.monitor import DriftMonitor
from streamapp.drift.stats import ReferenceProfile
from streamapp.events import FeatureBlock, Feedback
from streamapp.guard import GuardSettings, SafeAdaptationGuard, _mcnemar_worse
from streamapp.ledger import PendingLedger
from streamapp.model.head import SGDHead
from streamapp.pipeline import Pipeline
from tests.conftest import assert_valid

DIM = 2
CLASSES = ["a", "b"]
SETTINGS = GuardSettings(window=100, min_labels=40, alpha=0.01, good_every=50)


def test_falls_back_only_when_significantly_worse_and_recovers_with_hysteresis() -> None:
    guard = SafeAdaptationGuard(SETTINGS)
    truth = np.zeros(20, np.int64)
    right, wrong = truth, np.ones(20, np.int64)
    assert guard.observe(truth[:10], adapted=right[:10], source=right[:10]) is None  # ties
    assert guard.observe(truth, adapted=wrong, source=right) is None  # below min_labels
    assert guard.observe(truth, adapted=wrong, source=right) == "fallback"
    assert guard.state == "source"
    # equal again on the window is not enough to come back (b > c is): hysteresis
    for _ in range(5):
        assert guard.observe(truth, adapted=right, source=right) is None
    assert guard.state == "source"
    assert guard.observe(truth, adapted=right, source=wrong) == "recover"
    assert guard.decisions == {"fallback": 1, "recover": 1, "rollback": 0}


def test_a_slightly_worse_adapted_model_that_is_not_significant_keeps_serving() -> None:
    guard = SafeAdaptationGuard(SETTINGS)
    truth = np.zeros(100, np.int64)
    adapted = truth.copy()
    adapted[:3] = 1  # 3 more mistakes than the source in 100: p = 0.125
    assert guard.observe(truth, adapted=adapted, source=truth) is None
    assert guard.state == "adapted"


def test_the_p_value_is_the_exact_one_sided_binomial_test() -> None:
    for b in range(0, 120, 7):
        for c in range(b + 1, 160, 5):
            exact = stats.binomtest(c, b + c, 0.5, alternative="greater").pvalue
            assert _mcnemar_worse(b, c) == pytest.approx(exact, rel=1e-12, abs=1e-300)
    assert _mcnemar_worse(5, 5) == _mcnemar_worse(6, 5) == 1.0


@pytest.mark.parametrize("sizes", [[1] * 250, [7, 93, 1, 150, 3], [250], [99, 101, 50]])
def test_a_batch_of_labels_leaves_the_window_as_one_label_at_a_time_does(
    sizes: list[int],
) -> None:
    rng = np.random.default_rng(3)
    truth, adapted, source = (rng.integers(0, 2, 250) for _ in range(3))
    one_by_one, batched = SafeAdaptationGuard(SETTINGS), SafeAdaptationGuard(SETTINGS)
    for i in range(250):
        one_by_one.observe(truth[i : i + 1], adapted[i : i + 1], source[i : i + 1])
    start = 0
    for size in sizes:  # batches longer than the window (100) keep only their last labels
        batched.observe(*(a[start : start + size] for a in (truth, adapted, source)))
        start += size
    expected, got = one_by_one.state_dict(), batched.state_dict()
    for name in ("adapted_right", "source_right"):
        np.testing.assert_array_equal(got[name], expected[name])
    assert got["seen"] == expected["seen"] == 250
    assert batched.summary()["p_value"] == one_by_one.summary()["p_value"]


def make_pipeline(guard: SafeAdaptationGuard | None) -> Pipeline:
    coef, intercept = np.array([[1.0, -1.0]]), np.zeros(1)  # source: class b when x0 > x1
    X = np.random.default_rng(0).normal(size=(200, DIM))
    monitor = DriftMonitor(
        ReferenceProfile.from_data(X, (X[:, 0] > X[:, 1]).astype(np.int64), 2),
        ["x0", "x1"],
        CLASSES,
        window_events=10**9,
    )
    return Pipeline(
        lambda Z: np.asarray(Z, np.float32),
        SGDHead(coef, intercept, CLASSES, eta0=0.5),
        coef,
        intercept,
        PendingLedger(1000, DIM, 2, 1e9),
        monitor,
        model_name="m",
        model_version="1",
        clock=lambda: 0.0,
        guard=guard,
    )


def feed(pipeline: Pipeline, X: np.ndarray, y: np.ndarray, first: int) -> DecodedBatch:
    ids = [f"e{i}" for i in range(first, first + len(y))]
    block = FeatureBlock(ids, [None] * len(ids), X.astype(np.float32), np.zeros(len(ids)), [])
    feedback = [Feedback(e, int(label), 0.0) for e, label in zip(ids, y, strict=True)]
    return DecodedBatch(block, feedback=feedback)


def test_the_pipeline_serves_the_source_model_while_the_adapted_head_is_worse() -> None:
    pipeline = make_pipeline(SafeAdaptationGuard(SETTINGS))
    rng = np.random.default_rng(1)
    served = []
    for k in range(6):
        X = rng.normal(size=(50, DIM))
        truth = (X[:, 0] > X[:, 1]).astype(np.int64)  # the source model is right
        # labels flipped for a while: the adapted head learns the wrong concept
        y = 1 - truth if k < 3 else truth
        out = pipeline.process(feed(pipeline, X, y, 50 * k))
        assert out.predictions is not None
        served.append(out.predictions.model_states())
    # now the truth is the source's concept again; the adapted head learned the flipped one
    for k in range(6, 12):
        X = rng.normal(size=(50, DIM))
        y = (X[:, 0] > X[:, 1]).astype(np.int64)
        out = pipeline.process(feed(pipeline, X, y, 50 * k))
        assert out.predictions is not None
        served.append(out.predictions.model_states())
    report = pipeline.report(0.0)
    assert report["guard"]["decisions"]["fallback"] == 1
    assert {"source"} in [set(s) for s in served]
    assert_valid("drift-report", orjson.loads(orjson.dumps(report)))
    codec = Codec(["x0", "x1"], CLASSES)
    block = out.predictions
    values = [orjson.loads(v) for _, v in codec.encode_predictions(block, "m", "1")]
    for value in values:
        assert_valid("prediction", value)
    assert {v["model"]["state"] for v in values} <= {"adapted", "source"}


def test_without_a_guard_predictions_carry_no_state_and_reports_no_guard() -> None:
    pipeline = make_pipeline(None)
    X = np.random.default_rng(2).normal(size=(10, DIM))
    out = pipeline.process(feed(pipeline, X, np.zeros(10, np.int64), 0))
    assert out.predictions is not None and out.predictions.served_by is None
    [(_, value)] = Codec(["x0", "x1"], CLASSES).encode_predictions(
        out.predictions.take(np.arange(1)), "m", "1"
    )
    assert "state" not in orjson.loads(value)["model"]
    assert "guard" not in pipeline.report(0.0)


def test_a_diverged_head_is_rolled_back_to_the_last_good_state() -> None:
    guard = SafeAdaptationGuard(SETTINGS)
    pipeline = make_pipeline(guard)
    rng = np.random.default_rng(3)
    X = rng.normal(size=(60, DIM))
    pipeline.process(feed(pipeline, X, (X[:, 0] > X[:, 1]).astype(np.int64), 0))
    good = pipeline.head.state_dict()
    assert guard.last_good is not None
    # a step that diverges (as a too-high learning rate would): the weights become NaN
    learn = pipeline.head.learn_many

    def diverge(X: np.ndarray, y: np.ndarray) -> None:
        learn(X, y)
        pipeline.head.coef[:] = np.nan  # type: ignore[attr-defined]

    pipeline.head.learn_many = diverge  # type: ignore[method-assign]
    X = rng.normal(size=(5, DIM))
    pipeline.process(feed(pipeline, X, np.ones(5, np.int64), 60))
    after = pipeline.head.state_dict()
    assert guard.decisions["rollback"] == 1
    assert np.isfinite(after["coef"]).all()
    np.testing.assert_array_equal(after["coef"], good["coef"])


def test_the_guard_state_rides_in_the_snapshot_bitwise() -> None:
    first = make_pipeline(SafeAdaptationGuard(SETTINGS))
    rng = np.random.default_rng(4)
    X = rng.normal(size=(120, DIM))
    first.process(feed(first, X, 1 - (X[:, 0] > X[:, 1]).astype(np.int64), 0))
    restored = make_pipeline(SafeAdaptationGuard(SETTINGS))
    restored.load_state_dict(decode_state(encode_state(first.state_dict())))
    assert restored.guard is not None and first.guard is not None
    assert restored.guard.summary() == first.guard.summary()
    a, b = first.guard.state_dict(), restored.guard.state_dict()
    np.testing.assert_array_equal(a["adapted_right"], b["adapted_right"])
    np.testing.assert_array_equal(a["last_good"]["coef"], b["last_good"]["coef"])
    assert a["seen"] == b["seen"] == 120
