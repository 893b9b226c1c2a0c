"""``hyperplane``: river's rotating-hyperplane concept drift (binary classes).

Source: the hyperplane at rest. Target: the same hyperplane rotating (``mag_change``),
with a faster rotation in the second half, so accuracy decays unless the head learns.
"""

from __future__ import annotations

import itertools

import numpy as np
from river.datasets import synth

__all__ = ["HyperplaneDrift"]


class HyperplaneDrift:
    """The rotating-hyperplane scenario.

    >>> X, y, phase = HyperplaneDrift(seed=0).target_data(20)
    >>> X.shape, sorted(set(y.tolist())) <= [0, 1]
    ((20, 10), True)
    """

    name = "hyperplane"
    N_FEATURES = 10
    SOURCE_SIZE = 5000

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self.feature_names = [f"x{i}" for i in range(self.N_FEATURES)]
        self.classes = ["0", "1"]

    def _draw(self, n: int, mag_change: float, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        generator = synth.Hyperplane(
            seed=self.seed,
            n_features=self.N_FEATURES,
            n_drift_features=4,
            mag_change=mag_change,
            noise_percentage=0.05,
            sigma=0.1,
        )
        rows = list(itertools.islice(generator, skip, skip + n))
        X = np.array([[x[i] for i in range(self.N_FEATURES)] for x, _ in rows], np.float32)
        y = np.array([int(label) for _, label in rows], np.int64)
        return X, y

    def source_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self._draw(self.SOURCE_SIZE, mag_change=0.0)

    def target_data(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        half = n_events // 2
        X0, y0 = self._draw(half, mag_change=0.002, skip=self.SOURCE_SIZE)
        X1, y1 = self._draw(n_events - half, mag_change=0.01, skip=self.SOURCE_SIZE + half)
        phase = np.r_[np.zeros(half, np.int64), np.ones(n_events - half, np.int64)]
        return np.vstack([X0, X1]), np.r_[y0, y1], phase
