"""Champion vs challenger on the same delayed labels, prequentially.

Both heads score every event (the challenger in shadow) and learn from the same joined
labels; each label is scored here with the probabilities each head *served* for that event
(predict before learn). The comparison pairs the two on exactly the same labels:
accuracy, log loss and macro-F1 for each, and McNemar's test on the labels where exactly
one of them was right.

>>> import numpy as np
>>> cmp = ChampionChallenger(n_classes=2, alpha=0.05)
>>> truth = np.array([0, 1] * 50)
>>> right = np.eye(2)[truth] * 0.8 + 0.1
>>> wrong = np.eye(2)[1 - truth] * 0.8 + 0.1
>>> cmp.update(truth, champion=wrong, challenger=right)
>>> summary = cmp.summary()
>>> summary["better"], summary["challenger"]["accuracy"], summary["mcnemar"]["p_value"] < 1e-6
('challenger', 1.0, True)
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from scipy import stats

__all__ = ["ChampionChallenger", "paired"]

logger = logging.getLogger(__name__)

_EPS = 1e-15


def paired(champion_ids: list[str], challenger_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Row indices of the labels both joined, in the champion's order."""
    position = {event_id: i for i, event_id in enumerate(challenger_ids)}
    rows = [(i, position[e]) for i, e in enumerate(champion_ids) if e in position]
    if not rows:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    a, b = zip(*rows, strict=True)
    return np.asarray(a), np.asarray(b)


class ChampionChallenger:
    """Accumulates paired outcomes since the start (or the last promotion)."""

    def __init__(self, n_classes: int, alpha: float = 0.01) -> None:
        self.n_classes = n_classes
        self.alpha = alpha
        self._reset()

    def _reset(self) -> None:
        k = self.n_classes
        self.labels = 0
        self.only_champion_right = 0  # McNemar's b
        self.only_challenger_right = 0  # McNemar's c
        self._confusion = {
            "champion": np.zeros((k, k), np.int64),
            "challenger": np.zeros((k, k), np.int64),
        }
        self._log_loss = {"champion": 0.0, "challenger": 0.0}

    def update(self, truth: np.ndarray, champion: np.ndarray, challenger: np.ndarray) -> None:
        """``truth`` class indices; ``champion``/``challenger`` the probabilities they served."""
        if not len(truth):
            return
        rows = np.arange(len(truth))
        right = {}
        for name, proba in (("champion", champion), ("challenger", challenger)):
            predicted = proba.argmax(axis=1)
            np.add.at(self._confusion[name], (truth, predicted), 1)
            self._log_loss[name] -= float(np.log(np.clip(proba[rows, truth], _EPS, 1.0)).sum())
            right[name] = predicted == truth
        self.only_champion_right += int((right["champion"] & ~right["challenger"]).sum())
        self.only_challenger_right += int((right["challenger"] & ~right["champion"]).sum())
        self.labels += len(truth)

    def state_dict(self) -> dict[str, Any]:
        """The paired outcomes so far (arrays + JSON)."""
        return {
            "labels": self.labels,
            "only_champion_right": self.only_champion_right,
            "only_challenger_right": self.only_challenger_right,
            "confusion": {name: cm.copy() for name, cm in self._confusion.items()},
            "log_loss": dict(self._log_loss),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self.labels = int(state["labels"])
        self.only_champion_right = int(state["only_champion_right"])
        self.only_challenger_right = int(state["only_challenger_right"])
        for name, cm in state["confusion"].items():
            self._confusion[name] = np.asarray(cm, np.int64).copy()
        self._log_loss = {name: float(v) for name, v in state["log_loss"].items()}

    def _metrics(self, name: str) -> dict[str, float]:
        cm = self._confusion[name]
        tp = np.diag(cm).astype(np.float64)
        support, predicted = cm.sum(axis=1), cm.sum(axis=0)
        present = (support + predicted) > 0
        precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
        recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
        denom = precision + recall
        f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
        return {
            "accuracy": float(tp.sum() / max(self.labels, 1)),
            "log_loss": self._log_loss[name] / max(self.labels, 1),
            "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        }

    def p_value(self) -> float:
        """McNemar's test (continuity-corrected chi-square) on the discordant labels."""
        b, c = self.only_champion_right, self.only_challenger_right
        if b + c == 0:
            return 1.0
        return float(stats.chi2.sf((abs(b - c) - 1) ** 2 / (b + c), 1))

    def summary(self) -> dict[str, Any]:
        champion, challenger = self._metrics("champion"), self._metrics("challenger")
        p = self.p_value()
        better = None
        if self.labels and p < self.alpha:
            better = "challenger" if challenger["accuracy"] > champion["accuracy"] else "champion"
        return {
            "labels": self.labels,
            "champion": champion,
            "challenger": challenger,
            "mcnemar": {
                "only_champion_right": self.only_champion_right,
                "only_challenger_right": self.only_challenger_right,
                "p_value": p,
            },
            "alpha": self.alpha,
            "better": better,
        }

    def challenger_wins(self, min_labels: int, margin: float) -> bool:
        """Significantly better by at least ``margin`` accuracy over ``min_labels`` labels."""
        summary = self.summary()
        gain = summary["challenger"]["accuracy"] - summary["champion"]["accuracy"]
        return self.labels >= min_labels and summary["better"] == "challenger" and gain >= margin
