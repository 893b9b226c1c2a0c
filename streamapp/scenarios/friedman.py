"""``friedman-shift`` as a built-in scenario: the regression task's source data and target
stream (:class:`streamapp.regression.scenario.FriedmanShift`) behind the :class:`Scenario`
protocol, so ``train-source`` trains on it and ``produce`` streams it with numeric feedback.

>>> scenario = FriedmanScenario(seed=0)
>>> scenario.task, scenario.classes, scenario.feature_names[:3]
('regression', [], ['x0', 'x1', 'x2'])
>>> X, y = scenario.source_data()
>>> X.shape, y.dtype.name
((5000, 10), 'float64')
"""

from __future__ import annotations

import logging

import numpy as np

from streamapp.regression.scenario import FriedmanShift

__all__ = ["FriedmanScenario"]

logger = logging.getLogger(__name__)


class FriedmanScenario:
    """Friedman #1 with a recalibrated feature, then a global drift half-way."""

    name = "friedman-shift"
    task = "regression"
    SOURCE_SIZE = 5000

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._friedman = FriedmanShift(seed=seed)
        self.feature_names = [f"x{j}" for j in range(FriedmanShift.n_features)]
        self.classes: list[str] = []  # numeric targets: no classes

    def source_data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)``: ``y`` holds the numeric targets."""
        return self._friedman.source_data(self.SOURCE_SIZE)

    def target_data(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return self._friedman.target_data(n_events)
