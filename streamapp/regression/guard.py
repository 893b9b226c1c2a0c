"""Safe adaptation for a regression model: the classifiers' guard with a paired test on
absolute errors in place of McNemar's.

Every joined target scores the adapted head (before it learns the target) and the frozen
source model on the same served row. Over the rolling window of paired absolute errors:

- *fallback*: a one-sided Wilcoxon signed-rank test (normal approximation with tie
  correction) finds the adapted model's errors significantly larger (``p < alpha``): the
  source model serves;
- *recover*: while the source serves, the adapted model's mean absolute error on the window
  is again below the source's: the adapted model serves (the hysteresis is the gap between a
  significant loss and a plain win);
- *rollback*: as for classifiers, a head with non-finite weights is restored to its last
  good state.

>>> from streamapp.settings import GuardSettings
>>> guard = RegressionGuard(GuardSettings(window=200, min_labels=50, alpha=0.01))
>>> rng = np.random.default_rng(0)
>>> y = rng.normal(size=100)
>>> guard.observe(y, adapted=y + rng.normal(0, 1.0, 100), source=y + rng.normal(0, 0.1, 100))
'fallback'
>>> guard.observe(y, adapted=y, source=y + 1.0)
'recover'
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np
from scipy import special

from streamapp.guard import DECISIONS, Decision, SafeAdaptationGuard
from streamapp.settings import GuardSettings

__all__ = ["RegressionGuard", "wilcoxon_greater"]

logger = logging.getLogger(__name__)


def wilcoxon_greater(difference: np.ndarray) -> float:
    """One-sided p-value that ``difference`` is centred above zero: the Wilcoxon signed-rank
    test with zero differences dropped and the normal approximation with tie correction
    (scipy's ``wilcoxon(..., method="approx")``, without its per-call overhead).

    >>> from scipy import stats
    >>> d = np.random.default_rng(1).normal(0.3, 1.0, 200)
    >>> expected = stats.wilcoxon(d, alternative="greater", method="approx").pvalue
    >>> bool(abs(wilcoxon_greater(d) - expected) < 1e-9)
    True
    >>> ties = np.round(d, 1)  # tied magnitudes share their average rank
    >>> expected = stats.wilcoxon(ties, alternative="greater", method="approx").pvalue
    >>> bool(abs(wilcoxon_greater(ties) - expected) < 1e-9)
    True
    >>> wilcoxon_greater(np.zeros(5))
    1.0
    """
    d = np.asarray(difference, np.float64)
    d = d[d != 0]
    n = len(d)
    if n == 0:
        return 1.0
    # average ranks of |d| (ties share theirs), in numpy: rankdata's dispatch costs ~10x more
    magnitude = np.abs(d)
    order = magnitude.argsort(kind="mergesort")
    ordered = magnitude[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])
    counts = np.diff(np.r_[starts, n])
    ranks = np.empty(n)
    ranks[order] = np.repeat(starts + (counts + 1) / 2.0, counts)
    r_plus = float(ranks[d > 0].sum())
    mean = n * (n + 1) / 4.0
    variance = n * (n + 1) * (2 * n + 1) / 24.0 - float((counts**3 - counts).sum()) / 48.0
    if variance <= 0:
        return 1.0
    z = (r_plus - mean) / math.sqrt(variance)
    return float(special.ndtr(-z))


class RegressionGuard(SafeAdaptationGuard):
    """Which model serves (adapted or source), from paired absolute errors on the same targets."""

    def __init__(self, settings: GuardSettings) -> None:
        super().__init__(settings)
        w = settings.window
        self._adapted_error = np.zeros(w)
        self._source_error = np.zeros(w)

    def _errors(self) -> tuple[int, np.ndarray, np.ndarray]:
        n = min(self._seen, self.settings.window)
        return n, self._adapted_error[:n], self._source_error[:n]

    def observe(self, truth: np.ndarray, adapted: np.ndarray, source: np.ndarray) -> str | None:
        """Record paired absolute errors (targets, adapted and source values) and decide."""
        w, count = self.settings.window, len(truth)
        keep = min(count, w)
        slots = (self._seen + count - keep + np.arange(keep)) % w
        truth = np.asarray(truth, np.float64)
        self._adapted_error[slots] = np.abs(np.asarray(adapted) - truth)[count - keep :]
        self._source_error[slots] = np.abs(np.asarray(source) - truth)[count - keep :]
        self._seen += count
        n, a, s = self._errors()
        decision: Decision | None = None
        if not self.serving_source:
            if n >= self.settings.min_labels and wilcoxon_greater(a - s) < self.settings.alpha:
                decision = "fallback"
                self.serving_source = True
        elif a.mean() < s.mean():
            decision = "recover"
            self.serving_source = False
        if decision is not None:
            self.decisions[decision] += 1
            logger.info(
                "guard: %s (window %d labels, MAE adapted %.4g, source %.4g)",
                decision,
                n,
                a.mean(),
                s.mean(),
            )
        return decision

    def summary(self) -> dict[str, Any]:
        n, a, s = self._errors()
        summary: dict[str, Any] = {
            "state": self.state,
            "decisions": dict(self.decisions),
            "window_labels": n,
            "p_value": wilcoxon_greater(a - s) if n else 1.0,
        }
        if n:  # no error to average before the first label: absent
            summary.update(adapted_mae=float(a.mean()), source_mae=float(s.mean()))
        return summary

    def state_dict(self) -> dict[str, Any]:
        n = min(self._seen, self.settings.window)
        return {
            "adapted_error": self._adapted_error.copy(),
            "source_error": self._source_error.copy(),
            "seen": self._seen,
            "window_labels": n,
            "serving_source": self.serving_source,
            "decisions": dict(self.decisions),
            "last_good": self.last_good,
            "since_good": self._since_good,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._adapted_error = np.array(state["adapted_error"], np.float64)
        self._source_error = np.array(state["source_error"], np.float64)
        self._seen = int(state["seen"])
        self.serving_source = bool(state["serving_source"])
        self.decisions = {k: int(state["decisions"].get(k, 0)) for k in DECISIONS}
        self.last_good = state["last_good"]
        self._since_good = int(state["since_good"])
