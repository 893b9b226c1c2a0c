"""Drift and performance for a regression model: the classifiers' monitor, other measures.

Feature drift is the same as a classifier's. *Prediction drift* compares the served values,
binned on the cut points of the source model's predictions (the bundle's
``reference.prediction_cuts``), with the source profile, so the classifiers' binned PSI,
Jensen-Shannon and chi-square test apply unchanged. *Performance* is MAE, RMSE and R² of the
served values (rolling and since the start) beside the frozen source model's on the same
labels, the residual bias with its t-test (*residual drift*: a model that has started to
over- or under-predict), and the label delays. The change detectors watch the absolute errors,
divided by the source model's MAE so that their thresholds mean the same in any unit.
"""

from __future__ import annotations

import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import special

from streamapp.drift.monitor import DriftMonitor
from streamapp.drift.performance import ErrorDetectors
from streamapp.drift.stats import ReferenceProfile
from streamapp.regression.metrics import RegressionPerformance

__all__ = [
    "AbsErrorDetectors",
    "RegressionMonitor",
    "RegressionTracking",
    "value_bin_names",
    "value_bins",
]

logger = logging.getLogger(__name__)


def value_bins(cuts: np.ndarray, values: np.ndarray) -> np.ndarray:
    """The bin of each value on ``cuts`` (a value equal to a cut falls in the bin above it).

    >>> value_bins(np.array([0.0, 10.0]), np.array([-1.0, 0.0, 5.0, 10.0, np.nan])).tolist()
    [0, 1, 1, 2, 2]
    """
    return np.searchsorted(cuts, np.asarray(values, np.float64), side="right")


def value_bin_names(cuts: np.ndarray) -> list[str]:
    """Names of the bins ``cuts`` make, as the report's prediction counts are keyed.

    >>> value_bin_names(np.array([0.0, 2.5]))
    ['< 0', '[0, 2.5)', '>= 2.5']
    >>> value_bin_names(np.array([]))
    ['all']
    >>> value_bin_names(np.array([12345.1, 12345.9]))
    ['< 12345', '[12345, 12346)', '>= 12346']
    """
    values = np.asarray(cuts, np.float64).tolist()
    if not values:
        return ["all"]
    # the fewest significant digits (at least 4) that keep every cut's name apart
    digits = next(
        (d for d in range(4, 18) if len({f"{c:.{d}g}" for c in values}) == len(set(values))), 17
    )
    names = [f"{c:.{digits}g}" for c in values]
    inner = [f"[{a}, {b})" for a, b in itertools.pairwise(names)]
    return [f"< {names[0]}", *inner, f">= {names[-1]}"]


class RegressionTracking:
    """The performance section of a regression model's report, from its joined labels.

    >>> t = RegressionTracking(window=100)
    >>> y = np.arange(10.0)
    >>> t.update(y, y + 1.0, y, np.ones(10))
    >>> s = t.summary()
    >>> s["mae"], s["source_mae"], s["residual"]["mean"], s["residual"]["drifted"]
    (1.0, 0.0, 1.0, True)
    """

    def __init__(self, window: int = 1000, alpha: float = 0.01) -> None:
        self.window = window
        self.alpha = alpha
        self.served = RegressionPerformance(window)
        self.source = RegressionPerformance(window)
        self._delay = np.zeros(window)

    @property
    def total(self) -> int:
        return self.served.labels

    def update(
        self, targets: np.ndarray, served: np.ndarray, source: np.ndarray, delays: np.ndarray
    ) -> None:
        """Add labels with the values that were served and the frozen source model's."""
        if len(targets) == 0:
            return
        seen = self.served.labels
        self.served.update(served, targets)
        self.source.update(source, targets)
        keep = slice(max(len(delays) - self.window, 0), len(delays))
        slots = (seen + np.arange(len(delays))[keep]) % self.window
        self._delay[slots] = np.asarray(delays, np.float64)[keep]

    def summary(self) -> dict[str, Any]:
        served, source = self.served.summary(), self.source.summary()
        rolling, total = served["rolling"], served["since_start"]
        n = rolling["labels"]
        out: dict[str, Any] = {"labels": n, "labels_total": total["labels"]}
        if n == 0:
            return out
        values, targets = _window(self.served)
        residual = values - targets
        delays = np.percentile(self._delay[: min(n, self.window)], [50, 95, 99])
        out.update(
            {
                "mae": rolling["mae"],
                "rmse": rolling["rmse"],
                "r2": rolling["r2"],
                "source_mae": source["rolling"]["mae"],
                "source_rmse": source["rolling"]["rmse"],
                "mae_total": total["mae"],
                "rmse_total": total["rmse"],
                "r2_total": total["r2"],
                "source_mae_total": source["since_start"]["mae"],
                "residual": _bias(residual, self.alpha),
                "label_delay_s": {
                    f"p{q}": float(v) for q, v in zip((50, 95, 99), delays, strict=True)
                },
            }
        )
        # R² is undefined while the targets do not vary: absent then, as JSON reports say
        return {k: v for k, v in out.items() if v is not None}

    def state_dict(self) -> dict[str, Any]:
        n = min(self.served.labels, self.window)
        order = (self.served.labels - n + np.arange(n)) % self.window
        return {
            "served": self.served.state_dict(),
            "source": self.source.state_dict(),
            "delay": self._delay[order],
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.served.load_state_dict(state["served"])
        self.source.load_state_dict(state["source"])
        delay = np.asarray(state["delay"], np.float64)[-self.window :]
        self._delay = np.zeros(self.window)
        # the ring positions follow the label count, as update() writes them
        self._delay[(self.served.labels - len(delay) + np.arange(len(delay))) % self.window] = delay


def _window(perf: RegressionPerformance) -> tuple[np.ndarray, np.ndarray]:
    state = perf.state_dict()
    return np.asarray(state["values"]), np.asarray(state["targets"])


def _bias(residual: np.ndarray, alpha: float) -> dict[str, Any]:
    """Mean residual (served - true) and a two-sided t-test that it is zero."""
    n = len(residual)
    mean = float(residual.mean())
    std = float(residual.std(ddof=1)) if n > 1 else 0.0
    if n < 2 or std == 0.0:
        p_value = 1.0 if mean == 0.0 or n < 2 else 0.0
    else:
        t = mean / (std / math.sqrt(n))
        p_value = float(2.0 * special.stdtr(n - 1, -abs(t)))
    return {"mean": mean, "std": std, "p_value": p_value, "drifted": p_value < alpha}


class AbsErrorDetectors(ErrorDetectors):
    """ADWIN and Page-Hinkley on absolute errors divided by ``scale`` (the source model's MAE).
    Page-Hinkley's threshold is ten times the 0/1 stream's: absolute errors are noisier (on
    ``friedman-shift``, 50 gives a false alarm every ~1,000 labels, 500 none before the drift).

    >>> rng = np.random.default_rng(0)
    >>> det = AbsErrorDetectors(scale=1.0)
    >>> det.update(np.abs(np.r_[rng.normal(0, 1, 3000), rng.normal(0, 3, 3000)]))
    >>> points = det.summary()
    >>> [any(3000 < p < 3600 for p in points[k]["change_points"]) for k in sorted(points)]
    [True, True]
    """

    def __init__(self, scale: float = 1.0, ph_threshold: float = 500.0) -> None:
        self.scale = scale if scale > 0 and math.isfinite(scale) else 1.0
        super().__init__(ph_threshold=ph_threshold)

    def _reset(self) -> None:
        super()._reset()
        self._recent = np.zeros(self.history, np.float64)

    def update(self, errors: np.ndarray) -> None:
        values = np.asarray(errors, np.float64) / self.scale
        self._recent[np.arange(self._seen, self._seen + len(values)) % self.history] = values
        adwin, changed = self._adwin, []
        listed = values.tolist()
        for i, value in enumerate(listed, 1):
            adwin.update(value)
            if adwin.drift_detected:
                changed.append(i)
        found = {"adwin": changed, "page_hinkley": self._page_hinkley.update_many(listed)}
        for name, points in found.items():
            self._changes[name] += [self._seen + i for i in points]
            self._totals[name] += len(points)
        self._seen += len(values)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Approximate, as the classifiers': fresh detectors replay the last errors."""
        recent = np.asarray(state["recent"], np.float64)
        self._reset()
        self.update(recent * self.scale)
        self._seen = int(state["seen"])
        self._recent[np.arange(self._seen - len(recent), self._seen) % self.history] = recent
        self._totals = {k: int(v) for k, v in state["totals"].items()}
        changes = state.get("changes", {})
        self._changes = {name: [int(p) for p in changes.get(name, [])] for name in self._detectors}


class RegressionMonitor(DriftMonitor):
    """:class:`~streamapp.drift.monitor.DriftMonitor` for a regression model.

    ``update_events`` takes the served values' bins (:meth:`bins`) where a classifier's monitor
    takes predicted classes, and ``update_labels`` the targets with the served and the source
    model's values.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(500, 2))
    >>> cuts = np.array([-1.0, 0.0, 1.0])
    >>> profile = ReferenceProfile.from_data(X, value_bins(cuts, X[:, 0]), 4)
    >>> m = RegressionMonitor(profile, ["a", "b"], cuts, window_events=100)
    >>> values = X[:100, 0] + 3.0  # served values far above the source's
    >>> m.update_events(X[:100], m.bins(values), np.zeros(100))
    >>> m.update_labels(X[:100, 0], values, X[:100, 0], np.ones(100))
    >>> r = m.report(0.0)
    >>> r["prediction"]["drifted"], r["performance"]["mae"], r["performance"]["source_mae"]
    (True, 3.0, 0.0)
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        feature_names: Sequence[str],
        prediction_cuts: np.ndarray,
        *,
        scale: float = 1.0,
        window_events: int = 1000,
        interval_s: float = 30.0,
        min_events: int = 50,
        alpha: float = 0.01,
        dataset_drift_share: float = 0.25,
        performance_window: int = 1000,
    ) -> None:
        self.prediction_cuts = np.asarray(prediction_cuts, np.float64)
        super().__init__(
            profile,
            feature_names,
            value_bin_names(self.prediction_cuts),
            window_events=window_events,
            interval_s=interval_s,
            min_events=min_events,
            alpha=alpha,
            dataset_drift_share=dataset_drift_share,
            performance_window=performance_window,
        )
        self.performance = RegressionTracking(performance_window, alpha)  # type: ignore[assignment]
        self.detectors = AbsErrorDetectors(scale)

    @property
    def typical_value(self) -> float:
        """The source model's median prediction (the middle cut of its profile), served in
        place of a value that is not finite."""
        cuts = self.prediction_cuts
        return float(cuts[len(cuts) // 2]) if len(cuts) else 0.0

    def bins(self, values: np.ndarray) -> np.ndarray:
        """The prediction-profile bin of each served value."""
        return value_bins(self.prediction_cuts, values)

    def update_labels(
        self, y_true: np.ndarray, proba: np.ndarray, source_pred: np.ndarray, delays: np.ndarray
    ) -> None:
        """Add joined targets with the served values (``proba``: ``(n, 1)`` or ``(n,)``) and
        the frozen source model's values."""
        if len(y_true) == 0:
            return
        served = np.asarray(proba, np.float64).reshape(len(y_true))
        self.performance.update(y_true, served, source_pred, delays)
        self.detectors.update(np.abs(served - np.asarray(y_true, np.float64)))
        self._count_labels(len(y_true))
