"""Regression and its conformal intervals, prequentially, on ``friedman-shift``.

The learning protocol of :mod:`streamapp.bench.transfer` on the regression scenario
(:mod:`streamapp.regression.scenario`): batches of 100, predict then learn. Methods: the
frozen source head, the online linear head that starts from it (recursive ridge anchored at
the source head, or normalized SGD on a squared or Huber loss), and
river's from-scratch ``StandardScaler | LinearRegression`` on the raw features. The online
head's values carry conformal intervals (:mod:`streamapp.conformal`, absolute residuals),
measured as served: coverage over the stream and in every window of 1,000 labels after the
first 500, mean width. Pure numpy: no bundle, no broker (the regression task is not wired into
the worker yet).

Run: ``python -m streamapp.bench.regression [--events 20000] [--delay 0]``.
"""

from __future__ import annotations

import argparse
import logging
from typing import Any, cast

import numpy as np
import orjson

from streamapp.bench.coverage import coverage_summary
from streamapp.conformal import ConformalCalibrator, intervals, residual_scores
from streamapp.regression.head import LinearRegressionHead, Loss, Solver
from streamapp.regression.metrics import (
    ErrorStreamDetectors,
    RegressionPerformance,
    paired_abs_error_test,
)
from streamapp.regression.scenario import FriedmanShift, RandomFourierFeatures, ridge
from streamapp.settings import ConformalSettings

__all__ = ["main", "prequential", "river_baseline"]

logger = logging.getLogger(__name__)

BATCH = 100


def prequential(
    head: LinearRegressionHead,
    E: np.ndarray,
    y: np.ndarray,
    conformal: ConformalCalibrator,
    *,
    learn: bool = True,
    delay: int = 0,
) -> dict[str, np.ndarray]:
    """Served values, interval half-widths and coverage per event; each batch's labels join
    ``delay`` batches after it was served."""
    values, halves = np.empty(len(y)), np.empty(len(y))
    waiting: list[slice] = []
    for start in range(0, len(y), BATCH):
        rows = slice(start, min(start + BATCH, len(y)))
        values[rows] = head.predict_many(E[rows])
        halves[rows] = conformal.threshold()
        waiting.append(rows)
        if len(waiting) > delay:
            due = waiting.pop(0)
            conformal.update(residual_scores(values[due], y[due]), halves[due], 2 * halves[due])
            if learn:
                head.learn_many(E[due], y[due])
    low, high = intervals(values, halves)
    return {"values": values, "halves": halves, "covered": (low <= y) & (y <= high)}


def river_baseline(X: np.ndarray, y: np.ndarray) -> np.ndarray:
    """river's from-scratch ``StandardScaler | LinearRegression``: predict, then learn."""
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    out = np.empty(len(y))
    for i, (x, target) in enumerate(zip(X.tolist(), y.tolist(), strict=True)):
        features = dict(enumerate(x))
        out[i] = cast(float, model.predict_one(features))
        model.learn_one(features, target)
    return out


def _quarters_mae(values: np.ndarray, y: np.ndarray) -> list[float]:
    return [
        float(np.abs(v - t).mean())
        for v, t in zip(np.array_split(values, 4), np.array_split(y, 4), strict=True)
    ]


def run(
    events: int, conformal: ConformalSettings, solver: Solver, loss: Loss, lr: float, delay: int
) -> dict[str, Any]:
    scenario = FriedmanShift()
    embed = RandomFourierFeatures(scenario.n_features)
    Xs, ys = scenario.source_data()
    coef, intercept = ridge(embed(Xs), ys)
    source_mae = float(np.abs(embed(Xs) @ coef + intercept - ys).mean())  # the errors' unit
    X, y, phase = scenario.target_data(events)
    E = embed(X)
    results: dict[str, Any] = {}
    served: dict[str, np.ndarray] = {}
    for method in ("frozen", "adapted"):
        head = LinearRegressionHead(
            coef,
            intercept,
            solver=solver,
            loss=loss,
            lr=lr,
            step_size=10 if solver == "sgd" else 50,
        )
        c = ConformalCalibrator(conformal.coverage, conformal.window, conformal.gamma)
        out = prequential(head, E, y, c, learn=method == "adapted", delay=delay)
        served[method] = out["values"]
        perf = RegressionPerformance(window=1000)
        perf.update(out["values"], y)
        detectors = ErrorStreamDetectors(scale=source_mae)
        detectors.update(np.abs(out["values"] - y))
        results[method] = {
            "change_points": detectors.change_points,
            "mae_quarters": _quarters_mae(out["values"], y),
            **perf.summary()["since_start"],
            "intervals": coverage_summary(
                out["covered"], 2 * out["halves"], phase, conformal.coverage
            ),
        }
    served["river"] = river_baseline(X, y)
    perf = RegressionPerformance(window=1000)
    perf.update(served["river"], y)
    results["river"] = {
        "mae_quarters": _quarters_mae(served["river"], y),
        **perf.summary()["since_start"],
    }
    quarters = np.array_split(np.arange(events), 4)
    results["guard"] = [
        paired_abs_error_test(served["adapted"][q], served["frozen"][q], y[q]) for q in quarters
    ]
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--delay", type=int, default=0, help="batches before labels join")
    parser.add_argument("--solver", choices=("ridge", "sgd"), default="ridge")
    parser.add_argument("--loss", choices=("squared", "huber"), default="squared", help="sgd's")
    parser.add_argument("--lr", type=float, default=0.5)
    parser.add_argument("--conformal", default="{}", help="ConformalSettings as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    conformal = ConformalSettings(**orjson.loads(args.conformal))
    result = run(args.events, conformal, args.solver, args.loss, args.lr, args.delay)
    print(orjson.dumps({"stream": "friedman-shift", **result}).decode(), flush=True)


if __name__ == "__main__":
    main()
