"""Online conformal uncertainty: prediction sets (and intervals) that keep their coverage.

Adaptive conformal inference (ACI, Gibbs & Candès 2021, "Adaptive conformal inference under
distribution shift") on a sliding window of nonconformity scores. Each joined label gives
the score of its served prediction; the threshold served next is the conformal quantile of
the last ``window`` scores at a miscoverage level ``alpha_t`` that ACI moves after every
label: up when the served set covered the label, down when it missed,

    alpha_{t+1} = alpha_t + gamma * (alpha - err_t),   err_t = 1 if the label was missed.

Unrolled, ``alpha_t = alpha + gamma * (t * alpha - misses_t)``: the level is a function of
two counters, so the state does not depend on how labels were cut into batches (a live run
and its replay cut them differently, yet must end equal), and the long-run miscoverage
``misses_t / t`` is within ``(1 + gamma) / (gamma * t)`` of ``alpha`` whatever the stream does
(the level cannot leave ``[-gamma, 1 + gamma]`` for long: past either end the sets are all
or nothing, which pushes it back). The bound assumes each label is judged at the level its
set was served at; with ``d`` labels in flight (delayed labels) the level can overshoot by
about ``gamma * d`` before their errors arrive, and the bound loosens to about
``(1 + gamma * (1 + d)) / (gamma * t)`` (a batch served at one threshold counts as its
rows in flight).

``err_t`` is judged against the set *as served* (the threshold is remembered with the row in
the ledger), so with delayed labels the reported coverage is the served sets' coverage.

Scores: for a classifier ``1 - p(true class)`` (the set is every class with ``1 - p <= q``:
the smallest sets on average for a given coverage); for a regressor the absolute residual
(the interval is ``value ± q``).

>>> cal = ConformalCalibrator(coverage=0.8, window=200, gamma=0.01)
>>> cal.threshold()  # no labels yet: no claim, every class is in the set
inf
>>> rng = np.random.default_rng(0)
>>> proba = rng.dirichlet(np.ones(3), size=2000)
>>> labels = np.array([rng.choice(3, p=p) for p in proba])  # calibrated probabilities
>>> for start in range(0, 2000, 40):  # served in batches, labels joined later
...     rows = slice(start, start + 40)
...     served = np.full(40, cal.threshold())
...     _ = cal.update(class_scores(proba[rows], labels[rows]), served,
...                    set_sizes(proba[rows], served))
>>> round(cal.coverage(), 2), cal.labels
(0.8, 2000)
>>> bool(np.isfinite(cal.threshold())), bool(0 < cal.alpha_t < 1)
(True, True)
"""

from __future__ import annotations

import logging
import math
from typing import Any, Literal, TypedDict

import numpy as np

__all__ = [
    "ConformalCalibrator",
    "ConformalSummary",
    "CoverageWindow",
    "class_scores",
    "intervals",
    "merge_summaries",
    "prediction_sets",
    "residual_scores",
    "set_sizes",
]

logger = logging.getLogger(__name__)


class CoverageWindow(TypedDict):
    """Coverage of the served sets over some labels."""

    labels: int
    coverage: float | None  # None: no labels
    # classes in a set (a classifier) or interval width (a regressor), over the bounded ones;
    # None: none bounded
    mean_size: float | None
    unbounded: int  # of the labels, served an unbounded interval (too few labels yet)


class ConformalSummary(TypedDict):
    """The ``conformal`` section of a drift report."""

    coverage_target: float
    recent: CoverageWindow  # the last ``window`` labels
    since_start: CoverageWindow
    alpha_t: float  # the miscoverage level ACI serves at now
    threshold: float | None  # the served score threshold now; None: not finite (see sets)
    # what is served now: "all" (every class, an unbounded interval: too few labels for the
    # level), "empty" (no class: the level is at or above 1), "bounded" (by ``threshold``)
    sets: Literal["all", "empty", "bounded"]


def class_scores(proba: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Nonconformity of each true class: ``1 - p(label)``.

    >>> class_scores(np.array([[0.7, 0.3], [0.2, 0.8]]), np.array([0, 0])).round(2).tolist()
    [0.3, 0.8]
    """
    return 1.0 - np.take_along_axis(np.asarray(proba, np.float64), labels[:, None], axis=1)[:, 0]


def prediction_sets(proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """``(n, n_classes)`` mask of each row's set: the classes whose score ``1 - p`` is at
    most the row's threshold (an infinite threshold: every class; NaN: none known).

    >>> prediction_sets(np.array([[0.7, 0.25, 0.05]] * 2), np.array([0.8, np.inf])).tolist()
    [[True, True, False], [True, True, True]]
    """
    return (1.0 - np.asarray(proba, np.float64)) <= np.asarray(thresholds, np.float64)[:, None]


def set_sizes(proba: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """Classes in each row's set.

    >>> set_sizes(np.array([[0.7, 0.25, 0.05]]), np.array([0.8])).tolist()
    [2.0]
    """
    return prediction_sets(proba, thresholds).sum(axis=1).astype(np.float64)


def residual_scores(values: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Nonconformity of a regressor's served values: the absolute residual.

    >>> residual_scores(np.array([1.0, 2.0]), np.array([1.5, 0.0])).tolist()
    [0.5, 2.0]
    """
    return np.abs(np.asarray(targets, np.float64) - np.asarray(values, np.float64))


def intervals(values: np.ndarray, thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(low, high)`` of each served value's interval ``value ± threshold`` (its width,
    ``2 * threshold``, is a regressor's set size).

    >>> low, high = intervals(np.array([10.0, 0.0]), np.array([1.5, np.inf]))
    >>> low.tolist(), high.tolist()
    ([8.5, -inf], [11.5, inf])
    """
    values, thresholds = np.asarray(values, np.float64), np.asarray(thresholds, np.float64)
    return values - thresholds, values + thresholds


class ConformalCalibrator:
    """Adaptive conformal thresholds, learned online from the served rows' scores.

    Parameters
    ----------
    coverage
        Target share of labels inside their served set or interval (``1 - alpha``).
    window
        Scores the quantile is taken over: the last ``window`` labels (recent enough to
        follow a drift, many enough for a steady quantile); also the report's recent window.
    gamma
        ACI's step: how fast the level reacts to misses. Larger follows a shift sooner, with
        noisier sets.
    """

    def __init__(self, coverage: float = 0.9, window: int = 500, gamma: float = 0.005) -> None:
        if not 0.0 < coverage < 1.0:
            raise ValueError(f"coverage must be in (0, 1), got {coverage}")
        if window < 1 or gamma <= 0:
            raise ValueError("window must be positive and gamma > 0")
        self.coverage_target = coverage
        self.window = window
        self.gamma = gamma
        self._reset()

    def reset(self) -> None:
        """Start fresh (no labels, the level at ``alpha``), keeping the settings."""
        self._reset()

    def _reset(self) -> None:
        w = self.window
        # rings of the newest labels' score, hit and size: slots ``[0, filled)`` hold them
        # (the oldest at ``next`` once full), and the next label goes to slot ``next``
        self._filled = 0
        self._next = 0
        self._scores = np.zeros(w, np.float64)
        self._covered = np.zeros(w, bool)
        self._sizes = np.zeros(w, np.float64)
        self.labels = 0  # labels seen since the start
        self.misses = 0  # of which outside their served set
        self.size_total = 0.0  # sum of served set sizes (widths) over the bounded ones
        self.unbounded = 0  # labels served an infinite size (an unbounded interval)
        # ACI's level counts the labels since it started at ``alpha``: since the start,
        # unless a restore changed ``coverage`` or ``gamma`` (then the level restarts)
        self.level_labels = 0
        self.level_misses = 0
        self._threshold: float | None = None  # cached until the next update

    @property
    def alpha(self) -> float:
        """The target miscoverage ``1 - coverage``."""
        return 1.0 - self.coverage_target

    @property
    def alpha_t(self) -> float:
        """ACI's level now, from the counters (see the module docstring)."""
        return self.alpha + self.gamma * (self.level_labels * self.alpha - self.level_misses)

    def threshold(self) -> float:
        """The score threshold to serve: the conformal ``1 - alpha_t`` quantile of the
        window's scores (``inf``: every class / an unbounded interval, while there are too
        few scores for the level; ``-inf``: the empty set, when ``alpha_t >= 1``)."""
        if self._threshold is None:
            self._threshold = self._quantile()
        return self._threshold

    def _quantile(self) -> float:
        n = self._filled
        alpha_t = self.alpha_t
        if alpha_t >= 1.0:
            return -math.inf
        rank = math.ceil((n + 1) * (1.0 - alpha_t))  # the finite-sample conformal rank
        if n == 0 or rank > n:
            return math.inf
        scores = self._scores[:n]  # the ring is full, or filled from slot 0
        q = float(np.partition(scores, rank - 1)[rank - 1])
        return math.inf if math.isnan(q) else q  # never served: NaN means "none known"

    def update(self, scores: np.ndarray, thresholds: np.ndarray, sizes: np.ndarray) -> np.ndarray:
        """Learn from joined labels, in label order: their scores, the thresholds their rows
        were served with and the served set sizes (interval widths). Rows served without a
        threshold (NaN: before conformal was on) are skipped. A NaN score (a model that gave
        NaN) counts as a miss with the highest score, so it can widen the sets but never make
        the threshold NaN. Returns, for every row given, whether its set covered the label
        (False for the skipped rows)."""
        scores = np.asarray(scores, np.float64)
        thresholds = np.asarray(thresholds, np.float64)
        sizes = np.asarray(sizes, np.float64)
        known = ~np.isnan(thresholds)
        every = np.zeros(len(scores), bool)
        if not known.all():
            scores, thresholds, sizes = scores[known], thresholds[known], sizes[known]
        nan = np.isnan(scores)
        scores = np.where(nan, np.inf, scores)
        covered = (scores <= thresholds) & ~nan
        every[known] = covered
        n = len(scores)
        if n == 0:
            return every
        keep = slice(max(n - self.window, 0), n)  # a batch longer than the window: its last
        slots = (self._next + np.arange(n)[keep]) % self.window
        self._scores[slots] = scores[keep]
        self._covered[slots] = covered[keep]
        self._sizes[slots] = sizes[keep]
        misses = int(n - covered.sum())
        self._next = (self._next + n) % self.window
        self._filled = min(self._filled + n, self.window)
        self.labels += n
        self.misses += misses
        self.level_labels += n
        self.level_misses += misses
        # a running sum in label order: the same total however the labels were batched
        # an unbounded interval (inf) is counted apart: one would make the mean width inf
        # for good; an empty one (a -inf threshold) is 0 wide
        sizes = np.maximum(sizes, 0.0)
        bounded = sizes[np.isfinite(sizes)]
        self.unbounded += n - len(bounded)
        self.size_total = float(np.add.accumulate(np.concatenate([[self.size_total], bounded]))[-1])
        self._threshold = None
        return every

    def coverage(self) -> float:
        """The served sets' coverage since the start (NaN before any label)."""
        return 1.0 - self.misses / self.labels if self.labels else math.nan

    def summary(self) -> ConformalSummary:
        """The report's ``conformal`` section."""
        n = self._filled
        threshold = self.threshold()
        return {
            "coverage_target": self.coverage_target,
            "recent": _window(n, int(self._covered[:n].sum()), self._sizes[:n]),
            "since_start": _window(
                self.labels, self.labels - self.misses, self.size_total, self.unbounded
            ),
            "alpha_t": self.alpha_t,
            "threshold": threshold if math.isfinite(threshold) else None,
            "sets": "bounded" if math.isfinite(threshold) else "all" if threshold > 0 else "empty",
        }

    def state_dict(self) -> dict[str, Any]:
        """The rings in label order (oldest first), the counters, and the settings the level
        was built under."""
        n = self._filled
        order = (self._next - n + np.arange(n)) % self.window
        return {
            "scores": self._scores[order],
            "covered": self._covered[order],
            "sizes": self._sizes[order],
            "labels": self.labels,
            "misses": self.misses,
            "size_total": self.size_total,
            "unbounded": self.unbounded,
            "coverage": self.coverage_target,
            "gamma": self.gamma,
            "level_labels": self.level_labels,
            "level_misses": self.level_misses,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` (taken with any window: the newest scores are kept).

        The level was built under the saved ``coverage`` and ``gamma``; under other settings
        (or unknown ones) its counters mean nothing (100k labels at 0.9 read at 0.95 would
        put the level far below 0: every class in every set for a long time), so it restarts
        at the new ``alpha``. The score window and the coverage counters are kept."""
        self._reset()
        scores = np.asarray(state["scores"], np.float64)[-self.window :]
        n = len(scores)
        self.labels = int(state["labels"])
        self.misses = int(state["misses"])
        self.size_total = float(state["size_total"])
        self.unbounded = int(state.get("unbounded", 0))
        same = state.get("coverage") == self.coverage_target and state.get("gamma") == self.gamma
        if same:
            self.level_labels = int(state["level_labels"])
            self.level_misses = int(state["level_misses"])
        else:
            logger.info(
                "conformal settings changed (coverage %s -> %s, gamma %s -> %s): the level "
                "restarts at alpha = %.3f",
                state.get("coverage"),
                self.coverage_target,
                state.get("gamma"),
                self.gamma,
                self.alpha,
            )
        # the saved scores fill the first slots (a larger window: the rest stays unfilled)
        self._filled, self._next = n, n % self.window
        self._scores[:n] = scores
        self._covered[:n] = np.asarray(state["covered"], bool)[len(state["covered"]) - n :]
        self._sizes[:n] = np.asarray(state["sizes"], np.float64)[len(state["sizes"]) - n :]


def _window(
    labels: int, covered: int, sizes: float | np.ndarray, unbounded: int = 0
) -> CoverageWindow:
    """A window's summary from its counts and its sizes' sum, or its sizes (an array: the
    unbounded ones are counted here)."""
    if isinstance(sizes, np.ndarray):
        finite = np.isfinite(sizes)
        unbounded, sizes = int(len(sizes) - finite.sum()), float(sizes[finite].sum())
    bounded = labels - unbounded
    return {
        "labels": labels,
        "coverage": covered / labels if labels else None,
        "mean_size": sizes / bounded if bounded else None,
        "unbounded": unbounded,
    }


def merge_summaries(parts: list[ConformalSummary]) -> dict[str, Any]:
    """The coverage of several scorers' sets together: counts add, coverage and mean size
    are weighted by labels (each scorer calibrates on the labels it joins). There is no
    ``alpha_t`` or ``threshold``: each scorer serves its own (the schema has them optional).

    >>> a = ConformalCalibrator(window=10)
    >>> _ = a.update(np.array([0.1, 0.9]), np.full(2, 0.5), np.array([1.0, 3.0]))
    >>> merge_summaries([a.summary(), ConformalCalibrator().summary()])["since_start"]
    {'labels': 2, 'coverage': 0.5, 'mean_size': 2.0, 'unbounded': 0}
    """
    out: dict[str, Any] = {"coverage_target": parts[0]["coverage_target"]}
    for key in ("recent", "since_start"):
        windows = [p[key] for p in parts]
        labels = sum(w["labels"] for w in windows)
        covered = sum(w["labels"] * (w["coverage"] or 0.0) for w in windows)
        unbounded = sum(w.get("unbounded", 0) for w in windows)
        size = sum((w["labels"] - w.get("unbounded", 0)) * (w["mean_size"] or 0.0) for w in windows)
        out[key] = _window(labels, round(covered), size, unbounded)
    return out
