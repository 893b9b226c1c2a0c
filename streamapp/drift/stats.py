"""Two-sample drift statistics on fixed reference bins, vectorized over features.

The reference profile (bin cut points and counts per feature, from the source training
data) ships in the model bundle. A window of target events is binned on the same cuts and
compared with PSI, Jensen-Shannon divergence and the KS statistic of the binned CDFs.

Thresholds are calibrated to the window size: under no drift, with a window of ``n`` and a
reference of ``m`` events in ``B`` bins, ``PSI / (1/n + 1/m)`` is approximately chi-square
with ``B - 1`` degrees of freedom, so a 100-event window gets a much larger threshold than
a 10,000-event window and neither cries wolf more often than ``alpha``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import special, stats

__all__ = ["BinnedComparison", "ReferenceProfile", "compare_binned", "cut_points"]

logger = logging.getLogger(__name__)

_SMOOTHING = 0.5  # pseudo-count per bin, so an empty bin never makes PSI infinite


def cut_points(values: np.ndarray, max_bins: int = 10) -> np.ndarray:
    """Interior bin cuts for one feature; bin ``i`` holds ``cuts[i-1] <= x < cuts[i]``.

    Few distinct values get one bin each; a constant gets a bin of its own with empty bins
    on either side, so any value the source never showed lands in a bin of its own.

    >>> cut_points(np.array([0.0, 0.0, 1.0, 2.0]), max_bins=10).tolist()
    [0.5, 1.5]
    >>> cut_points(np.array([3.0, 3.0])).tolist()
    [3.0, 3.000003]
    >>> len(cut_points(np.random.default_rng(0).normal(size=1000), max_bins=10))
    9
    """
    distinct = np.unique(values)
    if len(distinct) == 1:
        c = float(distinct[0])
        return np.array([c, c + max(abs(c), 1.0) * 1e-6])
    if len(distinct) <= max_bins:
        return (distinct[:-1] + distinct[1:]) / 2.0
    quantiles = np.quantile(values, np.linspace(0, 1, max_bins + 1)[1:-1])
    cuts = np.unique(quantiles)
    # a cut at the minimum would leave an always-empty first bin
    return cuts[cuts > distinct[0]]


def _no_cuts() -> np.ndarray:
    return np.empty(0)


@dataclass(frozen=True, slots=True)
class ReferenceProfile:
    """Per-feature bins and counts of the source data, plus its prediction distribution.

    ``cuts`` is ``(n_features, max_cuts)`` padded with ``+inf``; feature ``j`` uses
    ``n_bins[j]`` bins and ``counts[j, :n_bins[j]]``. A classifier's ``prediction_counts``
    count its predicted classes and ``prediction_cuts`` is empty; a regression model's bin its
    predicted values on ``prediction_cuts`` (``len(cuts) + 1`` counts, a value equal to a cut
    in the bin above it, as for the features).
    """

    cuts: np.ndarray
    n_bins: np.ndarray
    counts: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    prediction_counts: np.ndarray
    # last, with a default: profiles written before regression bundles have none
    prediction_cuts: np.ndarray = field(default_factory=_no_cuts)

    @classmethod
    def from_data(
        cls, X: np.ndarray, predicted: np.ndarray, n_classes: int, max_bins: int = 10
    ) -> ReferenceProfile:
        """A classifier's profile: ``predicted`` holds class indices."""
        counts = np.bincount(predicted, minlength=n_classes).astype(np.float64)
        return cls._of_features(X, max_bins, counts, _no_cuts())

    @classmethod
    def from_regression(
        cls, X: np.ndarray, predicted_values: np.ndarray, max_bins: int = 10
    ) -> ReferenceProfile:
        """A regression model's profile: ``predicted_values`` binned on up to ``max_bins - 1``
        quantile cuts of themselves.

        >>> X = np.zeros((4, 1)); values = np.array([0.0, 1.0, 1.0, 3.0])
        >>> profile = ReferenceProfile.from_regression(X, values)
        >>> profile.prediction_cuts.tolist(), profile.prediction_counts.tolist()
        ([0.5, 2.0], [1.0, 2.0, 1.0])
        """
        values = np.asarray(predicted_values, np.float64).reshape(-1)
        prediction_cuts = cut_points(values, max_bins)
        bins = np.searchsorted(prediction_cuts, values, side="right")
        counts = np.bincount(bins, minlength=len(prediction_cuts) + 1).astype(np.float64)
        return cls._of_features(X, max_bins, counts, prediction_cuts)

    @classmethod
    def _of_features(
        cls,
        X: np.ndarray,
        max_bins: int,
        prediction_counts: np.ndarray,
        prediction_cuts: np.ndarray,
    ) -> ReferenceProfile:
        per_feature = [cut_points(X[:, j], max_bins) for j in range(X.shape[1])]
        width = max(len(c) for c in per_feature)
        cuts = np.full((X.shape[1], width), np.inf)
        for j, c in enumerate(per_feature):
            cuts[j, : len(c)] = c
        n_bins = np.array([len(c) + 1 for c in per_feature])
        profile = cls(
            cuts=cuts,
            n_bins=n_bins,
            counts=np.zeros((X.shape[1], width + 1)),
            mean=X.mean(axis=0),
            std=X.std(axis=0),
            prediction_counts=prediction_counts,
            prediction_cuts=prediction_cuts,
        )
        return cls(**{**profile.as_arrays(), "counts": profile.bin_counts(X)})

    def bin_counts(self, X: np.ndarray) -> np.ndarray:
        """``(n_features, max_bins)`` counts of ``X`` on the reference cuts (a value equal to
        a cut falls in the bin above it)."""
        n_features, width = self.cuts.shape
        X = np.asarray(X, np.float64)
        # (n, F): the index of each value's bin, one cut column at a time (a (n, F, width)
        # comparison costs 3x as much in memory traffic)
        flat = np.broadcast_to(np.arange(n_features) * (width + 1), X.shape).copy()
        for cut in self.cuts.T:
            flat += cut <= X
        return (
            np.bincount(flat.ravel(), minlength=n_features * (width + 1))
            .reshape(n_features, width + 1)
            .astype(np.float64)
        )

    def as_arrays(self) -> dict[str, np.ndarray]:
        return {name: getattr(self, name) for name in self.__slots__}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> ReferenceProfile:
        """The profile :meth:`as_arrays` gave; one saved before ``prediction_cuts`` existed
        gets an empty array (a classifier's)."""
        arrays = {"prediction_cuts": _no_cuts(), **arrays}
        return cls(**{name: np.asarray(arrays[name]) for name in cls.__slots__})


@dataclass(frozen=True, slots=True)
class BinnedComparison:
    """Per-row statistics of ``window`` vs ``reference`` counts."""

    psi: np.ndarray
    js: np.ndarray
    ks: np.ndarray
    p_value: np.ndarray
    ks_p_value: np.ndarray
    scale: np.ndarray  # 1/n + 1/m per row
    dof: np.ndarray  # bins - 1 per row

    def drifted(self, alpha: float) -> np.ndarray:
        return self.p_value < alpha

    def psi_threshold(self, alpha: float) -> np.ndarray:
        """The PSI above which a row counts as drifted at false-alarm rate ``alpha``."""
        return self.scale * stats.chi2.isf(alpha, self.dof)


def compare_binned(
    reference: np.ndarray, window: np.ndarray, n_bins: np.ndarray | None = None
) -> BinnedComparison:
    """Compare rows of bin counts; row ``j`` uses its first ``n_bins[j]`` bins.

    ``psi`` uses the smoothed proportions, ``js`` is the Jensen-Shannon divergence in bits
    (0..1), ``ks`` the largest gap between the binned CDFs, ``p_value`` the chi-square
    calibrated PSI p-value, ``ks_p_value`` the asymptotic Kolmogorov p-value.

    >>> ref = np.array([[50.0, 50.0]]); same = compare_binned(ref, np.array([[5.0, 5.0]]))
    >>> float(same.psi[0]), float(same.js[0]), float(same.p_value[0])
    (0.0, 0.0, 1.0)
    >>> shifted = compare_binned(ref, np.array([[10.0, 0.0]]))
    >>> bool(shifted.p_value[0] < 0.01), round(float(shifted.ks[0]), 2)
    (True, 0.5)
    """
    reference = np.atleast_2d(np.asarray(reference, np.float64))
    window = np.atleast_2d(np.asarray(window, np.float64))
    rows, width = reference.shape
    if n_bins is None:
        n_bins = np.full(rows, width)
    valid = np.arange(width)[None, :] < np.asarray(n_bins)[:, None]
    m = reference.sum(axis=1)
    n = window.sum(axis=1)
    b = valid.sum(axis=1)

    q = np.where(valid, (reference + _SMOOTHING) / (m + _SMOOTHING * b)[:, None], 1.0)
    p = np.where(valid, (window + _SMOOTHING) / (n + _SMOOTHING * b)[:, None], 1.0)
    psi = ((p - q) * np.log(p / q)).sum(axis=1)

    with np.errstate(invalid="ignore", divide="ignore"):
        q_raw = reference / m[:, None]
        p_raw = np.where(n[:, None] > 0, window / np.maximum(n, 1)[:, None], 0.0)
        mid = (p_raw + q_raw) / 2.0
        js = (
            special.xlogy(p_raw, p_raw / np.where(mid > 0, mid, 1.0)).sum(axis=1)
            + special.xlogy(q_raw, q_raw / np.where(mid > 0, mid, 1.0)).sum(axis=1)
        ) / (2 * np.log(2))
    ks = np.abs(np.cumsum(p_raw, axis=1) - np.cumsum(q_raw, axis=1)).max(axis=1)

    scale = 1.0 / np.maximum(n, 1) + 1.0 / np.maximum(m, 1)
    dof = np.maximum(b - 1, 1)
    p_value = np.where(n > 0, stats.chi2.sf(psi / scale, dof), 1.0)
    effective = np.sqrt(n * m / np.maximum(n + m, 1))
    ks_p_value = np.where(n > 0, special.kolmogorov(effective * ks), 1.0)
    return BinnedComparison(
        psi=np.maximum(psi, 0.0),
        js=np.clip(js, 0.0, 1.0),
        ks=np.clip(ks, 0.0, 1.0),  # cumulative sums may end a rounding error above 1
        p_value=p_value,
        ks_p_value=np.minimum(ks_p_value, 1.0),
        scale=scale,
        dof=dof,
    )
