"""The drift monitor: window statistics against the bundle's reference, reported when due."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import orjson

from streamapp.drift.performance import ErrorDetectors, RollingPerformance
from streamapp.drift.report import WindowMeasures, WindowSections
from streamapp.drift.stats import ReferenceProfile, compare_binned

__all__ = ["DriftCursor", "DriftMonitor", "WindowCounts", "window_sections"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DriftCursor:
    """Where the last report cut the stream: its ``report_seq`` and how many events and
    joined labels the monitor had counted since it started, at that cut.

    >>> DriftCursor.from_json(DriftCursor(3, 1200, 1100).to_json())
    DriftCursor(reports=3, events=1200, labels=1100)
    """

    reports: int = 0
    events: int = 0
    labels: int = 0

    def to_json(self) -> bytes:
        return orjson.dumps({"drift": [self.reports, self.events, self.labels]})

    @classmethod
    def from_json(cls, value: bytes) -> DriftCursor:
        """Raises ValueError for anything but a cursor."""
        try:
            reports, events, labels = orjson.loads(value)["drift"]
            return cls(int(reports), int(events), int(labels))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a drift cursor: {value[:100]!r}") from exc


class DriftMonitor:
    """Accumulates a tumbling window of scored events and a rolling window of labels.

    A report is due every ``window_events`` scored events, or every ``interval_s`` seconds
    once at least ``min_events`` were scored.

    Exactly-once keeps reports in step with the committed inputs through a :class:`DriftCursor`:
    a transaction with a report also writes :meth:`cursor`, and after a restore :meth:`resume`
    skips the events and labels that the last committed report already counted, however the
    replay's batches fall (a window is cut where a batch ends, and a replay's batches are not
    the original's).

    >>> from streamapp.drift.stats import ReferenceProfile
    >>> rng = np.random.default_rng(0)
    >>> profile = ReferenceProfile.from_data(rng.normal(size=(500, 2)), np.zeros(500, int), 2)
    >>> def monitor():
    ...     return DriftMonitor(profile, ["a", "b"], ["x", "y"], window_events=100)
    >>> def scored(m, n):
    ...     m.update_events(rng.normal(size=(n, 2)), np.zeros(n, int), np.zeros(n))
    >>> original = monitor()
    >>> scored(original, 60); scored(original, 60)  # a report is due after the 2nd batch
    >>> original.report(0.0)["window"]["events"], original.cursor()
    (120, DriftCursor(reports=1, events=120, labels=0))
    >>> replay = monitor()  # restored from before those batches, replayed in one batch
    >>> replay.resume(original.cursor()); scored(replay, 150)
    >>> replay.reports, replay.events_in_window  # the 30 events after the committed cut
    (1, 30)

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
        self._events_total = self._labels_total = 0  # counted since the start, for cursors
        self._cut_events = self._cut_labels = 0  # the totals at the last report
        self._skip_events = self._skip_labels = 0  # replayed ones a committed report counted
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
        self._events_total += len(X)
        missing = np.isnan(X)
        if missing.any():
            self._imputed_total += missing.sum(axis=0)  # since start: skipped rows too
        if self._skip_events:
            skip = min(self._skip_events, len(X))
            self._skip_events -= skip
            X, predicted, event_ts, missing = (
                X[skip:],
                predicted[skip:],
                event_ts[skip:],
                missing[skip:],
            )
            if len(X) == 0:
                return
        if missing.any():
            self._imputed += missing.sum(axis=0)
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
        self._count_labels(len(y_true))

    def _count_labels(self, n: int) -> None:
        """Count ``n`` joined labels in the window (after a restore, those a committed report
        already counted only in the totals)."""
        skip = min(self._skip_labels, n)
        self._skip_labels -= skip
        self._labels += n - skip
        self._labels_total += n

    def cursor(self) -> DriftCursor:
        """The last report's cut, for a commit to carry."""
        return DriftCursor(self.reports, self._cut_events, self._cut_labels)

    def resume(self, committed: DriftCursor) -> None:
        """After a restore from an older snapshot: the last committed report was ``committed``,
        so the replay's events and labels up to its cut belong to reports already published.
        Nothing to do when the restored state is already there."""
        if committed.reports <= self.reports:
            return
        logger.info(
            "drift reports resume after report %d (the snapshot had %d)",
            committed.reports,
            self.reports,
        )
        self.reports = committed.reports
        self._cut_events, self._cut_labels = committed.events, committed.labels
        self._skip_events = max(committed.events - self._events_total, 0)
        self._skip_labels = max(committed.labels - self._labels_total, 0)
        self._start_window(time.time())

    def continue_from(self, previous: DriftMonitor) -> None:
        """Number reports on from ``previous`` (a monitor replaced by a new bundle's): its
        ``report_seq``, totals and last cut; the new window starts empty."""
        self.reports = previous.reports
        self._events_total, self._labels_total = previous._events_total, previous._labels_total
        self._cut_events, self._cut_labels = previous._cut_events, previous._cut_labels

    def replay_finished(self) -> None:
        """What a replay did not bring (a broker that lost records) is not waited for."""
        self._skip_events = self._skip_labels = 0

    _WINDOW = ("_feature_counts", "_class_counts", "_sum", "_sumsq", "_imputed", "_imputed_total")
    _SCALARS = ("_events", "_labels", "_window_start", "_first_ts", "_last_ts", "reports")
    _COUNTERS = (
        "_events_total",
        "_labels_total",
        "_cut_events",
        "_cut_labels",
        "_skip_events",
        "_skip_labels",
    )

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {name: getattr(self, name).copy() for name in self._WINDOW}
        state.update({name: getattr(self, name) for name in self._SCALARS + self._COUNTERS})
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
        for name in self._COUNTERS:  # absent from snapshots before cursors
            setattr(self, name, int(state.get(name, 0)))
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

    def report(self, now: float) -> WindowMeasures:
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
        self._cut_events, self._cut_labels = self._events_total, self._labels_total
        report: WindowMeasures = {
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
) -> WindowSections:
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
