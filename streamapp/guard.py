"""Safe adaptation: serve the frozen source model while the adapted one is worse.

Every joined label scores both the adapted head (as it is, before it learns the label) and
the frozen source model on exactly the same served row. Over a rolling window of these
paired outcomes, McNemar's exact test (as in :mod:`streamapp.drift.challenger`) decides:

- *fallback*: the adapted model is significantly worse (one-sided ``p < alpha``): the source
  model serves;
- *recover*: while the source serves, the adapted model is again right more often than the
  source on the window's labels (``b > c``): the adapted model serves. The gap between the two
  rules is the hysteresis;
- *rollback*: non-finite weights or loss after a learning step: the head is restored to its
  last good state (saved every ``good_every`` labels while it is finite and not worse).

The state is arrays plus JSON, part of the pipeline's snapshot, so a restore is bitwise.

>>> import numpy as np
>>> guard = SafeAdaptationGuard(GuardSettings(window=200, min_labels=50, alpha=0.01))
>>> truth = np.zeros(100, np.int64)
>>> guard.observe(truth, adapted=np.ones(100, np.int64), source=truth)
'fallback'
>>> guard.serving_source, guard.decisions["fallback"]
(True, 1)
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
from scipy import special

from streamapp.model.head import HeadState, OnlineHead
from streamapp.settings import GuardSettings

__all__ = ["DECISIONS", "GuardSettings", "SafeAdaptationGuard", "head_is_finite"]

logger = logging.getLogger(__name__)

Decision = Literal["fallback", "recover", "rollback"]
DECISIONS: tuple[Decision, ...] = ("fallback", "recover", "rollback")


def head_is_finite(head: OnlineHead) -> bool:
    """No NaN or infinity in the head's weights (or its last loss, when it has one)."""
    check = getattr(head, "is_finite", None)
    if check is not None:
        return bool(check())
    return all(
        bool(np.isfinite(v).all())
        for v in head.state_dict().values()
        if isinstance(v, np.ndarray) and v.dtype.kind == "f"
    )


def _mcnemar_worse(b: int, c: int) -> float:
    """One-sided exact p-value that the adapted model is worse (``c`` = only source right):
    ``P(X >= c)`` for ``X ~ Binomial(b + c, 1/2)``, as ``scipy.stats.binomtest(c, b + c,
    alternative="greater")`` gives it (to an ulp) without its ~60 µs per call, once a batch.

    >>> round(_mcnemar_worse(0, 6), 12), _mcnemar_worse(3, 3)  # (1/2)**6: only source right
    (0.015625, 1.0)
    """
    if c <= b:
        return 1.0
    return float(special.bdtrc(c - 1, b + c, 0.5))


class SafeAdaptationGuard:
    """Which model serves (adapted or source), from paired outcomes on the same labels."""

    def __init__(self, settings: GuardSettings) -> None:
        self.settings = settings
        w = settings.window
        self._adapted_right = np.zeros(w, bool)
        self._source_right = np.zeros(w, bool)
        self._seen = 0  # labels observed since the start (ring position = seen % window)
        self.serving_source = False
        self.decisions: dict[str, int] = dict.fromkeys(DECISIONS, 0)
        self.last_good: HeadState | None = None
        self._since_good = 0

    @property
    def state(self) -> str:
        """``"source"`` or ``"adapted"``: which model serves now."""
        return "source" if self.serving_source else "adapted"

    def _window_counts(self) -> tuple[int, int, int]:
        n = min(self._seen, self.settings.window)
        a, s = self._adapted_right[:n], self._source_right[:n]
        return n, int((a & ~s).sum()), int((~a & s).sum())

    def observe(self, truth: np.ndarray, adapted: np.ndarray, source: np.ndarray) -> str | None:
        """Record paired outcomes (class indices) and decide; returns the decision, if any."""
        w, count = self.settings.window, len(truth)
        keep = min(count, w)  # of a batch longer than the window, only its last labels stay
        slots = (self._seen + count - keep + np.arange(keep)) % w
        self._adapted_right[slots] = (adapted == truth)[count - keep :]
        self._source_right[slots] = (source == truth)[count - keep :]
        self._seen += count
        n, b, c = self._window_counts()
        decision: Decision | None = None
        if not self.serving_source:
            if n >= self.settings.min_labels and _mcnemar_worse(b, c) < self.settings.alpha:
                decision = "fallback"
                self.serving_source = True
        elif b > c:
            decision = "recover"
            self.serving_source = False
        if decision is not None:
            self.decisions[decision] += 1
            logger.info("guard: %s (window %d labels, b=%d, c=%d)", decision, n, b, c)
        return decision

    def after_learn(self, head: OnlineHead, learned: int) -> str | None:
        """Roll a diverged head back to its last good state; save a good one when due."""
        if not head_is_finite(head):
            if self.last_good is not None:
                head.load_state_dict(self.last_good)
            self.decisions["rollback"] += 1
            logger.warning("guard: the head diverged (non-finite); rolled back to the last good")
            return "rollback"
        self._since_good += learned
        if self.last_good is None or (
            self._since_good >= self.settings.good_every and not self.serving_source
        ):
            self.last_good = head.state_dict()
            self._since_good = 0
        return None

    def summary(self) -> dict[str, Any]:
        """For the drift report: who serves, the decisions so far, the window's comparison."""
        n, b, c = self._window_counts()
        a = self._adapted_right[:n]
        s = self._source_right[:n]
        return {
            "state": self.state,
            "decisions": dict(self.decisions),
            "window_labels": n,
            "adapted_accuracy": float(a.mean()) if n else None,
            "source_accuracy": float(s.mean()) if n else None,
            "p_value": _mcnemar_worse(b, c),
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "adapted_right": self._adapted_right.copy(),
            "source_right": self._source_right.copy(),
            "seen": self._seen,
            "serving_source": self.serving_source,
            "decisions": dict(self.decisions),
            "last_good": self.last_good,
            "since_good": self._since_good,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._adapted_right = np.array(state["adapted_right"], bool)
        self._source_right = np.array(state["source_right"], bool)
        self._seen = int(state["seen"])
        self.serving_source = bool(state["serving_source"])
        self.decisions = {k: int(state["decisions"].get(k, 0)) for k in DECISIONS}
        self.last_good = state["last_good"]
        self._since_good = int(state["since_good"])
