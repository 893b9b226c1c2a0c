"""``digits-shift``: scikit-learn's bundled 8x8 digits; the target drifts twice.

Source: the original images. Target phase 0: one-pixel translation, lower contrast, a
brighter background and sensor noise. Phase 1 (second half): a two-pixel translation,
stronger noise and a washed-out contrast.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

__all__ = ["DigitsShift"]


class DigitsShift:
    """The digits domain-shift scenario.

    >>> scenario = DigitsShift(seed=0)
    >>> X, y = scenario.source_data()
    >>> X.shape, len(scenario.classes)
    ((1797, 64), 10)
    >>> Xt, yt, phase = scenario.target_data(10)
    >>> Xt.shape, int(phase.max())
    ((10, 64), 1)
    """

    name = "digits-shift"
    # (dx, dy, contrast, brightness, noise sigma) per phase
    SHIFTS = ((1, 0, 0.8, 0.5, 1.0), (2, 1, 0.6, 1.0, 2.0))

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        digits = load_digits()
        self._X = digits.data.astype(np.float32)
        self._y = digits.target.astype(np.int64)
        self.feature_names = [f"px{r}{c}" for r in range(8) for c in range(8)]
        self.classes = [str(c) for c in range(10)]

    def source_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self._X.copy(), self._y.copy()

    def target_data(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed + 1)
        index = rng.integers(0, len(self._X), n_events)
        phase = (np.arange(n_events) >= n_events // 2).astype(np.int64)
        X = np.empty((n_events, 64), np.float32)
        for p, (dx, dy, contrast, brightness, sigma) in enumerate(self.SHIFTS):
            rows = np.flatnonzero(phase == p)
            images = self._X[index[rows]].reshape(-1, 8, 8)
            images = np.roll(images, shift=(dy, dx), axis=(1, 2))
            images = images * contrast + brightness + rng.normal(0.0, sigma, images.shape)
            X[rows] = np.clip(images, 0.0, 16.0).reshape(-1, 64)
        return X, self._y[index], phase
