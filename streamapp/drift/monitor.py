"""The drift monitor: window statistics against the bundle's reference, reported when due."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from streamapp.drift.performance import ErrorDetectors, RollingPerformance
from streamapp.drift.stats import ReferenceProfile, compare_binned

__all__ = ["DriftMonitor", "WindowCounts", "window_sections"]

logger = logging.getLogger(__name__)


class DriftMonitor:
    """Accumulates a tumbling window of scored events and a rolling window of labels.

    A report is due every ``window_events`` scored events, or every ``interval_s`` seconds
    once at least ``min_events`` were scored.

    Parameters
    ----------
    profile
        The source domain's reference profile.
    feature_names, classes
        For naming the report's entries.
    """

    def __init__(
        self,
        profile: ReferenceProfile,
        feature_names: Sequence[str],
        classes: Sequence[str],
        *,
        window_events: int = 1000,
        interval_s: float = 30.0,
        min_events: int = 50,
        alpha: float = 0.01,
        dataset_drift_share: float = 0.25,
        performance_window: int = 1000,
    ) -> None:
        self.profile = profile
        self.feature_names = list(feature_names)
        self.classes = list(classes)
        self.window_events = window_events
        self.interval_s = interval_s
        self.min_events = min_events
        self.alpha = alpha
        self.dataset_drift_share = dataset_drift_share
        self.performance = RollingPerformance(len(self.classes), performance_window)
        self.detectors = ErrorDetectors()
        self.reports = 0
        self._imputed_total = np.zeros(len(self.feature_names))
        self._start_window(time.time())

    def _start_window(self, now: float) -> None:
        self._feature_counts = np.zeros_like(self.profile.counts)
        self._class_counts = np.zeros(len(self.classes))
        self._sum = np.zeros(len(self.feature_names))
        self._sumsq = np.zeros(len(self.feature_names))
        self._imputed = np.zeros(len(self.feature_names))
        self._events = 0
        self._labels = 0
        self._window_start = now
        self._first_ts = np.inf
        self._last_ts = -np.inf

    def update_events(self, X: np.ndarray, predicted: np.ndarray, event_ts: np.ndarray) -> None:
        """Add scored events: one vectorized binning per batch. A NaN is a missing value
        imputed with the source mean (``missing=impute``): counted, and binned as the mean."""
        if len(X) == 0:
            return
        missing = np.isnan(X)
        if missing.any():
            counts = missing.sum(axis=0)
            self._imputed += counts
            self._imputed_total += counts
            X = np.where(missing, self.profile.mean, X)
        self._feature_counts += self.profile.bin_counts(X)
        self._class_counts += np.bincount(predicted, minlength=len(self.classes))
        X64 = X.astype(np.float64)
        self._sum += X64.sum(axis=0)
        self._sumsq += (X64 * X64).sum(axis=0)
        self._events += len(X)
        self._first_ts = min(self._first_ts, float(event_ts.min()))
        self._last_ts = max(self._last_ts, float(event_ts.max()))

    def update_labels(
        self, y_true: np.ndarray, proba: np.ndarray, source_pred: np.ndarray, delays: np.ndarray
    ) -> None:
        """Add joined labels with the served probabilities and the frozen source head's guess."""
        if len(y_true) == 0:
            return
        self.performance.update(y_true, proba, source_pred, delays)
        self.detectors.update(proba.argmax(axis=1) != y_true)
        self._labels += len(y_true)

    _WINDOW = ("_feature_counts", "_class_counts", "_sum", "_sumsq", "_imputed", "_imputed_total")
    _SCALARS = ("_events", "_labels", "_window_start", "_first_ts", "_last_ts", "reports")

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in self._WINDOW}
        state.update({name: getattr(self, name) for name in self._SCALARS})
        state["performance"] = self.performance.state_dict()
        state["detectors"] = self.detectors.state_dict()
        return state

    # an empty window's first/last event times are +inf/-inf; snapshots written before
    # streamapp.checkpointing.state kept non-finite floats hold them as null
    _EMPTY: ClassVar[dict[str, float]] = {"_first_ts": np.inf, "_last_ts": -np.inf}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for name in self._WINDOW:
            if name not in state:  # a snapshot from before imputation was counted
                state = {**state, name: np.zeros(len(self.feature_names))}
            setattr(self, name, np.asarray(state[name], np.float64).copy())
        for name in self._SCALARS:
            value = state[name]
            if value is None and name in self._EMPTY:
                value = self._EMPTY[name]
            setattr(self, name, type(getattr(self, name))(value))
        self.performance.load_state_dict(state["performance"])
        self.detectors.load_state_dict(state["detectors"])

    def _by_feature(self, counts: np.ndarray) -> dict[str, int]:
        return dict(zip(self.feature_names, counts.astype(np.int64).tolist(), strict=True))

    @property
    def events_in_window(self) -> int:
        """Events scored since the last report."""
        return self._events

    def due(self, now: float) -> bool:
        if self._events >= self.window_events:
            return True
        return self._events >= self.min_events and now - self._window_start >= self.interval_s

    def report(self, now: float) -> dict[str, Any]:
        """The report of the current window; starts the next one."""
        n = self._events
        sections = window_sections(
            self.profile,
            self.feature_names,
            self.classes,
            WindowCounts(self._feature_counts, self._class_counts, self._sum, self._sumsq, n),
            self.alpha,
            self.dataset_drift_share,
        )
        detectors = self.detectors.summary()
        self.reports += 1
        report = {
            "report_seq": self.reports,
            "ts": now,
            "window": {
                "events": n,
                "labels": self._labels,
                "started_ts": self._window_start,
                "first_event_ts": self._first_ts if n else None,
                "last_event_ts": self._last_ts if n else None,
            },
            **sections,
            "performance": self.performance.summary(),
            "detectors": detectors,
            # missing values imputed with the source mean: in this window, and since start
            "imputed": {
                "window": self._by_feature(self._imputed),
                "total": self._by_feature(self._imputed_total),
            },
            # raw window histograms: reports of several scorers merge (drift.merge)
            "counts": {
                "features": self._feature_counts.astype(np.int64).tolist(),
                "predictions": self._class_counts.astype(np.int64).tolist(),
                "sum": self._sum.tolist(),
                "sumsq": self._sumsq.tolist(),
            },
        }
        self._start_window(now)
        return report


@dataclass(frozen=True, slots=True)
class WindowCounts:
    """What a window accumulates: histograms on the reference bins, class counts, moments."""

    features: np.ndarray  # (n_features, max_bins)
    predictions: np.ndarray  # (n_classes,)
    sum: np.ndarray
    sumsq: np.ndarray
    events: int


def window_sections(
    profile: ReferenceProfile,
    feature_names: list[str],
    classes: list[str],
    counts: WindowCounts,
    alpha: float,
    dataset_drift_share: float,
) -> dict[str, Any]:
    """The ``features``, ``dataset`` and ``prediction`` sections of a report on ``counts``."""
    n = counts.events
    features = compare_binned(profile.counts, counts.features, profile.n_bins)
    drifted = features.drifted(alpha) if n else np.zeros(len(feature_names), bool)
    thresholds = features.psi_threshold(alpha)
    mean = counts.sum / max(n, 1)
    std = np.sqrt(np.maximum(counts.sumsq / max(n, 1) - mean**2, 0.0))
    ref_std = np.where(profile.std > 0, profile.std, 1.0)
    predictions = compare_binned(profile.prediction_counts, counts.predictions)
    share = float(drifted.mean()) if len(drifted) else 0.0
    return {
        "features": [
            {
                "name": name,
                "psi": float(features.psi[j]),
                "psi_threshold": float(thresholds[j]),
                "js": float(features.js[j]),
                "ks": float(features.ks[j]),
                "ks_p_value": float(features.ks_p_value[j]),
                "p_value": float(features.p_value[j]),
                "drifted": bool(drifted[j]),
                "mean_shift": float((mean[j] - profile.mean[j]) / ref_std[j]),
                "std_ratio": float(std[j] / ref_std[j]),
            }
            for j, name in enumerate(feature_names)
        ],
        "dataset": {
            "drifted_share": share,
            "drifted_features": int(drifted.sum()),
            "threshold_share": dataset_drift_share,
            "alpha": alpha,
            "drifted": share >= dataset_drift_share,
        },
        "prediction": {
            "counts": dict(zip(classes, counts.predictions.astype(int).tolist(), strict=True)),
            "psi": float(predictions.psi[0]),
            "js": float(predictions.js[0]),
            "p_value": float(predictions.p_value[0]),
            "drifted": bool(n and predictions.p_value[0] < alpha),
        },
    }
