"""Numeric targets (issue 34): the online regression head, its metrics and paired test."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.regression.head import LinearRegressionHead, Solver
from streamapp.regression.metrics import RegressionPerformance, paired_abs_error_test
from streamapp.regression.scenario import FriedmanShift, RandomFourierFeatures, ridge


def _data(n: int = 1200, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    E = rng.normal(size=(n, 4))
    return E, E @ np.array([1.0, -1.0, 0.5, 2.0]) + 1.0 + rng.normal(0, 0.1, n)


def _learn(head: LinearRegressionHead, E: np.ndarray, y: np.ndarray, cuts: list[int]) -> None:
    for start, stop in itertools.pairwise([0, *cuts, len(y)]):
        head.learn_many(E[start:stop], y[start:stop])


@pytest.mark.parametrize("solver", ["ridge", "sgd"])
def test_the_head_starts_from_the_source_and_does_not_depend_on_batching(solver: Solver) -> None:
    E, y = _data()
    source = np.array([0.5, 0.0, 0.0, 1.0])
    heads = [LinearRegressionHead(source, 0.2, solver=solver, step_size=25) for _ in range(3)]
    np.testing.assert_array_equal(heads[0].predict_many(E), E @ source + 0.2)
    for head, cuts in zip(heads, ([], [1, 30, 31, 700], list(range(13, 1200, 13))), strict=True):
        _learn(head, E, y, cuts)
    blobs = {encode_state(head.state_dict()) for head in heads}
    assert len(blobs) == 1  # bitwise: a replay cuts labels into other batches
    assert heads[0].n_learned == 1200
    assert mean_absolute_error(y, heads[0].predict_many(E)) < 0.2  # it learned the target
    np.testing.assert_array_equal(heads[0].source_predict_many(E), E @ source + 0.2)


def test_a_restored_head_goes_on_as_the_original() -> None:
    E, y = _data()
    head = LinearRegressionHead(np.zeros(4), 0.0, step_size=50)
    _learn(head, E[:630], y[:630], [100])  # 30 labels wait for their step
    restored = LinearRegressionHead(np.zeros(4), 0.0, step_size=50)
    restored.load_state_dict(decode_state(encode_state(head.state_dict())))
    assert restored.n_learned == 630
    _learn(head, E[630:], y[630:], [])
    _learn(restored, E[630:], y[630:], [])
    assert encode_state(restored.state_dict()) == encode_state(head.state_dict())


def test_a_non_finite_label_or_embedding_is_refused_before_it_poisons_the_head() -> None:
    E, y = _data(100)
    head = LinearRegressionHead(np.zeros(4), 0.0, step_size=10)
    head.learn_many(E[:45], y[:45])
    before = encode_state(head.state_dict())
    bad_y, bad_E = y[45:].copy(), E[45:].copy()
    bad_y[3], bad_E[7, 2] = np.nan, np.inf
    with pytest.raises(ValueError, match=r"rows \[3 7\]"):
        head.learn_many(bad_E, bad_y)
    assert encode_state(head.state_dict()) == before  # nothing of the batch was learned
    head.learn_many(E[45:], y[45:])
    assert np.isfinite(head.coef).all() and head.n_learned == 100
    with pytest.raises(ValueError, match="solver"):
        LinearRegressionHead(np.zeros(4), 0.0, solver="adam")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="loss"):
        LinearRegressionHead(np.zeros(4), 0.0, loss="l1")  # type: ignore[arg-type]


def test_huber_bounds_the_step_a_wild_label_takes() -> None:
    E, y = _data(50)
    y[7] = 1e6  # one wild label
    moved = {}
    for loss in ("squared", "huber"):
        head = LinearRegressionHead(np.zeros(4), 0.0, solver="sgd", loss=loss, step_size=50)
        head.learn_many(E, y)
        moved[loss] = float(np.abs(head.coef).max())
    assert moved["huber"] < 1.0 < 1000 * moved["huber"] < moved["squared"]


def test_the_metrics_are_sklearn_s_rolling_and_since_start() -> None:
    rng = np.random.default_rng(1)
    targets = rng.normal(3, 2, 900)
    values = targets + rng.normal(0, 0.7, 900)
    perf = RegressionPerformance(window=250)
    for start, stop in itertools.pairwise([0, 10, 400, 401, 900]):
        perf.update(values[start:stop], targets[start:stop])
    summary = perf.summary()
    for part, rows in (("since_start", slice(0, 900)), ("rolling", slice(650, 900))):
        measures = summary[part]
        assert measures["labels"] == rows.stop - rows.start
        assert measures["mae"] == pytest.approx(mean_absolute_error(targets[rows], values[rows]))
        rmse = np.sqrt(mean_squared_error(targets[rows], values[rows]))
        assert measures["rmse"] == pytest.approx(rmse)
        assert measures["r2"] == pytest.approx(r2_score(targets[rows], values[rows]))
    restored = RegressionPerformance(window=250)
    restored.load_state_dict(decode_state(encode_state(perf.state_dict())))
    assert restored.summary() == summary
    larger = RegressionPerformance(window=2000)  # no empty slots read as labels
    larger.load_state_dict(perf.state_dict())
    assert larger.summary()["rolling"] == summary["rolling"]


def test_r2_since_start_holds_for_large_steady_targets() -> None:
    rng = np.random.default_rng(3)
    targets = 1e8 + rng.normal(0, 1, 5000)  # y2_sum - y_sum^2 / n cancels to noise here
    values = targets + rng.normal(0, 0.5, 5000)
    perf = RegressionPerformance(window=100)
    for start in range(0, 5000, 100):
        perf.update(values[start : start + 100], targets[start : start + 100])
    r2 = perf.summary()["since_start"]["r2"]
    assert r2 == pytest.approx(r2_score(targets, values), abs=1e-6)


def test_the_paired_test_is_wilcoxon_s_on_absolute_errors() -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    source = y + rng.normal(0, 0.3, 300)
    slightly_worse = y + rng.normal(0.05, 0.3, 300)
    result = paired_abs_error_test(slightly_worse, source, y)
    expected = stats.wilcoxon(
        np.abs(slightly_worse - y) - np.abs(source - y), alternative="greater"
    )
    assert result["p_value"] == pytest.approx(expected.pvalue)
    assert result["worse"] == bool(expected.pvalue < 0.01)
    assert paired_abs_error_test(y + 1.0, source, y)["worse"]
    assert paired_abs_error_test(source, source, y) == {
        "labels": 300,
        "mean_difference": 0.0,
        "p_value": 1.0,
        "worse": False,
    }


def test_the_scenario_s_target_is_shifted_from_its_source() -> None:
    scenario = FriedmanShift()
    embed = RandomFourierFeatures(scenario.n_features)
    Xs, ys = scenario.source_data(3000)
    coef, intercept = ridge(embed(Xs[:2000]), ys[:2000])

    def mae(X: np.ndarray, y: np.ndarray) -> float:
        return float(np.abs(embed(X) @ coef + intercept - y).mean())

    X, y, phase = scenario.target_data(4000)
    held_out = mae(Xs[2000:], ys[2000:])
    recalibrated, drifted = mae(X[phase == 0], y[phase == 0]), mae(X[phase == 1], y[phase == 1])
    assert held_out < 1.5 < recalibrated < 3.0 < drifted  # each shift costs the frozen head
