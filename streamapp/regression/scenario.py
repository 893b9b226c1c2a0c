"""``friedman-shift``: a regression source task and a shifted target stream.

Friedman's #1 function (scikit-learn's ``make_friedman1``): ten features uniform on
``[0, 1]``, five of them used, ``y = 10 sin(pi x0 x1) + 20 (x2 - 0.5)^2 + 10 x3 + 5 x4 + noise``.
The source task is that function. The target stream starts with feature ``x3`` recalibrated
(the sensor now reads ``0.6 x3 + 0.35``: a frozen model is biased), and half-way the function
itself drifts: a hand-rolled global drift in the spirit of river's ``FriedmanDrift`` (a fixed
permutation of the five relevant features, which swap roles; river is not used here).

The "backbone" of this scenario is frozen: the raw features and 128 random Fourier features
of them; the transfer setting in miniature, a fixed representation under a linear head that
the source task fits (ridge) and the target stream adapts online.

>>> scenario = FriedmanShift()
>>> X, y = scenario.source_data(1000)
>>> X.shape, bool(10 < y.mean() < 20)
((1000, 10), True)
>>> X, y, phase = scenario.target_data(1000)
>>> phase[[0, 499, 500, 999]].tolist()
[0, 0, 1, 1]
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["FriedmanShift", "RandomFourierFeatures", "ridge"]

logger = logging.getLogger(__name__)


def _friedman(X: np.ndarray, drifted: bool) -> np.ndarray:
    x0, x1, x2, x3, x4 = (X[:, j] for j in ((3, 4, 1, 0, 2) if drifted else range(5)))
    return 10 * np.sin(np.pi * x0 * x1) + 20 * (x2 - 0.5) ** 2 + 10 * x3 + 5 * x4


class FriedmanShift:
    """The regression scenario (see the module docstring)."""

    name = "friedman-shift"
    n_features = 10

    def __init__(self, seed: int = 0, noise: float = 1.0) -> None:
        self.seed = seed
        self.noise = noise

    def source_data(self, n: int = 5000) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        X = rng.uniform(size=(n, self.n_features))
        return X.astype(np.float32), _friedman(X, False) + rng.normal(0, self.noise, n)

    def target_data(self, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, phase)``: recalibrated ``x3`` throughout; the function drifts half-way."""
        rng = np.random.default_rng(self.seed + 1)
        X = rng.uniform(size=(n, self.n_features))
        phase = (np.arange(n) >= n // 2).astype(np.int64)
        y = np.where(phase == 1, _friedman(X, True), _friedman(X, False))
        y = y + rng.normal(0, self.noise, n)
        seen = X.copy()
        seen[:, 3] = 0.6 * X[:, 3] + 0.35  # the recalibrated sensor
        return seen.astype(np.float32), y, phase


class RandomFourierFeatures:
    """A frozen embedding: the features and ``sqrt(2) cos(x W + b)``, ``W ~ N(0, 1 / scale^2)``.

    >>> RandomFourierFeatures(10, 64)(np.zeros((2, 10))).shape
    (2, 74)
    """

    def __init__(self, n_features: int, dim: int = 128, scale: float = 2.0, seed: int = 0) -> None:
        rng = np.random.default_rng(seed)
        self.W = rng.normal(0, 1 / scale, (n_features, dim))
        self.b = rng.uniform(0, 2 * np.pi, dim)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float64)
        return np.hstack([X, np.sqrt(2.0) * np.cos(X @ self.W + self.b)])


def ridge(E: np.ndarray, y: np.ndarray, l2: float = 1e-4) -> tuple[np.ndarray, float]:
    """The source head: ridge regression ``(coef, intercept)`` on embeddings (closed form).

    >>> E = np.random.default_rng(0).normal(size=(200, 2))
    >>> coef, intercept = ridge(E, E @ [2.0, -1.0] + 0.5, l2=1e-6)
    >>> coef.round(3).tolist(), round(intercept, 3)
    ([2.0, -1.0], 0.5)
    """
    mean_E, mean_y = E.mean(axis=0), float(np.mean(y))
    centered = E - mean_E
    gram = centered.T @ centered + l2 * len(y) * np.eye(E.shape[1])
    coef = np.linalg.solve(gram, centered.T @ (np.asarray(y) - mean_y))
    return coef, mean_y - float(mean_E @ coef)
