"""Prequential performance on delayed labels, and change detectors on the error stream."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from streamapp.drift.page_hinkley import PageHinkley

__all__ = ["ErrorDetectors", "RollingPerformance"]

logger = logging.getLogger(__name__)

_EPS = 1e-15


class RollingPerformance:
    """Metrics over the last ``window`` joined labels (a ring buffer, O(1) memory).

    >>> perf = RollingPerformance(n_classes=2, window=3)
    >>> proba = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    >>> perf.update(np.array([0, 1, 1, 1]), proba, np.zeros(4, int), np.array([1.0, 2.0, 3.0, 4.0]))
    >>> summary = perf.summary()
    >>> summary["labels"], round(summary["accuracy"], 3), round(summary["source_accuracy"], 3)
    (3, 0.667, 0.0)
    """

    def __init__(self, n_classes: int, window: int) -> None:
        self.n_classes = n_classes
        self.window = window
        self._reset()

    def _reset(self) -> None:
        self._true = np.zeros(self.window, np.int64)
        self._pred = np.zeros(self.window, np.int64)
        self._source_pred = np.zeros(self.window, np.int64)
        self._loss = np.zeros(self.window)
        self._delay = np.zeros(self.window)
        self._size = 0
        self._next = 0
        self.total = 0
        self.correct_total = 0  # since start, for the prequential accuracy of the whole run
        self.source_correct_total = 0

    def update(
        self, y_true: np.ndarray, proba: np.ndarray, source_pred: np.ndarray, delays: np.ndarray
    ) -> None:
        """Add labels with the probabilities that were served and the source head's guess."""
        k = len(y_true)
        if k == 0:
            return
        self.total += k
        self.correct_total += int((proba.argmax(axis=1) == y_true).sum())
        self.source_correct_total += int((source_pred == y_true).sum())
        if k > self.window:  # only the newest fit
            y_true, proba, source_pred, delays = (
                y_true[-self.window :],
                proba[-self.window :],
                source_pred[-self.window :],
                delays[-self.window :],
            )
            k = self.window
        idx = (self._next + np.arange(k)) % self.window
        self._true[idx] = y_true
        self._pred[idx] = proba.argmax(axis=1)
        self._source_pred[idx] = source_pred
        self._loss[idx] = -np.log(np.clip(proba[np.arange(k), y_true], _EPS, 1.0))
        self._delay[idx] = delays
        self._next = (self._next + k) % self.window
        self._size = min(self._size + k, self.window)

    def state_dict(self) -> dict[str, Any]:
        return {
            "true": self._true.copy(),
            "pred": self._pred.copy(),
            "source_pred": self._source_pred.copy(),
            "loss": self._loss.copy(),
            "delay": self._delay.copy(),
            "size": self._size,
            "next": self._next,
            "total": self.total,
            "correct_total": self.correct_total,
            "source_correct_total": self.source_correct_total,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._true, self._pred = state["true"].copy(), state["pred"].copy()
        self._source_pred, self._loss = state["source_pred"].copy(), state["loss"].copy()
        self._delay = state["delay"].copy()
        self._size, self._next = int(state["size"]), int(state["next"])
        self.total, self.correct_total = int(state["total"]), int(state["correct_total"])
        self.source_correct_total = int(state["source_correct_total"])

    def confusion(self) -> np.ndarray:
        """Rows are true classes, columns predicted classes."""
        c = self.n_classes
        t, p = self._true[: self._size], self._pred[: self._size]
        return np.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def summary(self) -> dict[str, Any]:
        n = self._size
        if n == 0:
            return {"labels": 0, "labels_total": self.total}
        cumulative = {
            "accuracy_total": self.correct_total / self.total,
            "source_accuracy_total": self.source_correct_total / self.total,
        }
        cm = self.confusion()
        tp = np.diag(cm).astype(np.float64)
        support = cm.sum(axis=1)
        predicted = cm.sum(axis=0)
        # macro averages over the classes present in the window (truth or prediction)
        present = (support + predicted) > 0
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
        delays = self._delay[:n]
        return {
            "labels": n,
            "labels_total": self.total,
            "accuracy": float(tp.sum() / n),
            "source_accuracy": float((self._source_pred[:n] == self._true[:n]).mean()),
            **cumulative,
            "macro_precision": float(precision[present].mean()),
            "macro_recall": float(recall[present].mean()),
            "macro_f1": float(f1[present].mean()),
            "log_loss": float(self._loss[:n].mean()),
            "confusion": cm.tolist(),
            "label_delay_s": {
                f"p{q}": float(v)
                for q, v in zip((50, 95, 99), np.percentile(delays, [50, 95, 99]), strict=True)
            },
        }


class ErrorDetectors:
    """river's ``ADWIN`` and the Page-Hinkley test (:mod:`streamapp.drift.page_hinkley`, river's
    arithmetic a batch at a time) on the 0/1 error stream of joined labels.

    Change points are reported as the cumulative label count at which a detector fired.

    >>> det = ErrorDetectors()
    >>> det.update(np.array([False] * 600 + [True] * 600))
    >>> det.summary()["adwin"]["total"] >= 1
    True
    """

    def __init__(
        self, adwin_delta: float = 0.002, ph_threshold: float = 50.0, history: int = 10_000
    ) -> None:
        self.adwin_delta = adwin_delta
        self.ph_threshold = ph_threshold
        self.history = history
        self._reset()

    def _reset(self) -> None:
        from river import drift

        self._adwin = drift.ADWIN(delta=self.adwin_delta)
        self._page_hinkley = PageHinkley(threshold=self.ph_threshold)
        self._detectors = ("adwin", "page_hinkley")
        self._changes: dict[str, list[int]] = {name: [] for name in self._detectors}
        self._totals = dict.fromkeys(self._detectors, 0)
        self._seen = 0
        # river's ADWIN keeps its window in a native object that cannot be saved without
        # pickle; a checkpoint keeps the recent errors instead and replays them on restore
        self._recent = np.zeros(self.history, np.bool_)

    def update(self, errors: np.ndarray) -> None:
        errors = np.asarray(errors, np.bool_)
        self._recent[np.arange(self._seen, self._seen + len(errors)) % self.history] = errors
        values = errors.astype(np.float64).tolist()
        adwin, changed = self._adwin, []
        for i, value in enumerate(values, 1):
            adwin.update(value)
            if adwin.drift_detected:
                changed.append(i)
        found = {"adwin": changed, "page_hinkley": self._page_hinkley.update_many(values)}
        for name, points in found.items():
            self._changes[name] += [self._seen + i for i in points]
            self._totals[name] += len(points)
        self._seen += len(values)

    def state_dict(self) -> dict[str, Any]:
        kept = min(self._seen, self.history)
        order = np.arange(self._seen - kept, self._seen) % self.history
        return {
            "recent": self._recent[order],
            "seen": self._seen,
            "totals": dict(self._totals),
            # change points not yet reported: the next report lists them, restored or not
            "changes": {name: list(points) for name, points in self._changes.items()},
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Approximate: fresh detectors replay the last ``history`` errors."""
        self._reset()
        recent = np.asarray(state["recent"], np.bool_)
        self.update(recent)
        self._seen = int(state["seen"])
        self._recent[np.arange(self._seen - len(recent), self._seen) % self.history] = recent
        self._totals = {k: int(v) for k, v in state["totals"].items()}
        changes = state.get("changes", {})
        self._changes = {name: [int(p) for p in changes.get(name, [])] for name in self._detectors}

    def summary(self, reset_window: bool = True) -> dict[str, Any]:
        """Change points since the last summary, and totals."""
        out = {
            name: {
                "drift_detected": bool(self._changes[name]),
                "change_points": list(self._changes[name]),
                "total": self._totals[name],
            }
            for name in self._detectors
        }
        if reset_window:
            self._changes = {name: [] for name in self._detectors}
        return out
