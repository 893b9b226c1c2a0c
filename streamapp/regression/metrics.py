"""Regression performance on delayed labels, and the guard's paired test on absolute errors.

:class:`RegressionPerformance` keeps MAE, RMSE and R² over a rolling window of the last
``window`` labels and since the start (sums, so a snapshot is a few numbers and the window),
and :func:`paired_abs_error_test` is the regression twin of the classifiers' McNemar test: is the
adapted model's absolute error significantly larger than the frozen source model's on the
same labels?
"""

from __future__ import annotations

import logging
import math
from typing import Any, TypedDict

import numpy as np

from streamapp.regression.guard import wilcoxon_greater

__all__ = ["PairedTest", "RegressionPerformance", "paired_abs_error_test"]

logger = logging.getLogger(__name__)


class PairedTest(TypedDict):
    labels: int
    mean_difference: float  # mean of |adapted error| - |source error|: > 0, adapted is worse
    p_value: float
    worse: bool  # adapted significantly worse at ``alpha``


def paired_abs_error_test(
    adapted: np.ndarray, source: np.ndarray, targets: np.ndarray, alpha: float = 0.01
) -> PairedTest:
    """One-sided Wilcoxon signed-rank test that the adapted model's absolute errors exceed
    the source model's on the same labels (distribution-free: residuals are rarely normal);
    the guard's test (:func:`~streamapp.regression.guard.wilcoxon_greater`), for a bench's
    stretch of labels.

    >>> rng = np.random.default_rng(0)
    >>> y = rng.normal(size=400)
    >>> good, bad = y + rng.normal(0, 0.1, 400), y + rng.normal(0, 0.5, 400)
    >>> paired_abs_error_test(bad, good, y)["worse"], paired_abs_error_test(good, bad, y)["worse"]
    (True, False)
    """
    targets = np.asarray(targets, np.float64)
    difference = np.abs(np.asarray(adapted) - targets) - np.abs(np.asarray(source) - targets)
    n = len(difference)
    if n == 0 or not np.any(difference):
        return {"labels": n, "mean_difference": 0.0, "p_value": 1.0, "worse": False}
    p_value = wilcoxon_greater(difference)  # the guard's test, on a whole stretch
    return {
        "labels": n,
        "mean_difference": float(difference.mean()),
        "p_value": p_value,
        "worse": p_value < alpha,
    }


class RegressionPerformance:
    """MAE, RMSE and R² of served values, rolling and since the start.

    >>> perf = RegressionPerformance(window=2)
    >>> perf.update(np.array([1.0, 2.0, 3.0]), np.array([1.0, 3.0, 5.0]))
    >>> s = perf.summary()
    >>> s["rolling"]["mae"], s["since_start"]["mae"], s["since_start"]["labels"]
    (1.5, 1.0, 3)
    >>> round(s["since_start"]["r2"], 3)  # 1 - 5 / 8
    0.375
    """

    def __init__(self, window: int = 1000) -> None:
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self._values = np.zeros(self.window)
        self._targets = np.zeros(self.window)
        self.labels = 0
        self._filled = 0  # ring slots [0, filled) hold the newest labels; the next goes to next
        self._next = 0
        # since the start: sums of |e| and e², and the targets' running mean and sum of squared
        # deviations (Welford: y2_sum - y_sum^2 / n would cancel for large, steady targets)
        self._sums = np.zeros(2)
        self._mean = 0.0
        self._m2 = 0.0

    def update(self, values: np.ndarray, targets: np.ndarray) -> None:
        values, targets = np.asarray(values, np.float64), np.asarray(targets, np.float64)
        n = len(values)
        keep = slice(max(n - self.window, 0), n)
        slots = (self._next + np.arange(n)[keep]) % self.window
        self._values[slots], self._targets[slots] = values[keep], targets[keep]
        self._next = (self._next + n) % self.window
        self._filled = min(self._filled + n, self.window)
        error = values - targets
        for i, column in enumerate((np.abs(error), error**2)):
            # in label order, one label at a time: the same sums however labels were batched
            self._sums[i] = np.add.accumulate(np.concatenate([[self._sums[i]], column]))[-1]
        mean, m2, seen = self._mean, self._m2, self.labels
        for y in targets.tolist():  # Welford, label by label (batch-invariant too)
            seen += 1
            delta = y - mean
            mean += delta / seen
            m2 += delta * (y - mean)
        self._mean, self._m2, self.labels = mean, m2, seen

    def summary(self) -> dict[str, Any]:
        n = self._filled
        return {
            "rolling": _measures(self._values[:n], self._targets[:n]),
            "since_start": self._since_start(),
        }

    def _since_start(self) -> dict[str, Any]:
        n = self.labels
        if n == 0:
            return {"labels": 0, "mae": None, "rmse": None, "r2": None}
        abs_sum, sq_sum = self._sums.tolist()
        total = self._m2  # n times the targets' variance
        return {
            "labels": n,
            "mae": abs_sum / n,
            "rmse": math.sqrt(sq_sum / n),
            "r2": 1.0 - sq_sum / total if total > 0 else None,
        }

    def state_dict(self) -> dict[str, Any]:
        n = self._filled
        order = (self._next - n + np.arange(n)) % self.window
        return {
            "values": self._values[order],
            "targets": self._targets[order],
            "labels": self.labels,
            "sums": self._sums.copy(),
            "mean": self._mean,
            "m2": self._m2,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        values = np.asarray(state["values"], np.float64)[-self.window :]
        targets = np.asarray(state["targets"], np.float64)[-self.window :]
        self.labels = int(state["labels"])
        n = len(values)  # into the first slots (a larger window: the rest stays unfilled)
        self._filled, self._next = n, n % self.window
        self._values[:n], self._targets[:n] = values, targets
        self._sums = np.asarray(state["sums"], np.float64)[:2].copy()
        self._mean, self._m2 = float(state["mean"]), float(state["m2"])


def _measures(values: np.ndarray, targets: np.ndarray) -> dict[str, Any]:
    n = len(values)
    if n == 0:
        return {"labels": 0, "mae": None, "rmse": None, "r2": None}
    error = values - targets
    total = float(((targets - targets.mean()) ** 2).sum())
    return {
        "labels": n,
        "mae": float(np.abs(error).mean()),
        "rmse": float(np.sqrt((error**2).mean())),
        "r2": 1.0 - float((error**2).sum()) / total if total > 0 else None,
    }
