"""The one rule for a linear head's shape: a binary head is one logit row (positive means the
second class, as scikit-learn stores it), a multiclass head one row per class (one-vs-rest).

>>> logit_rows(2), logit_rows(10)
(1, 10)
>>> predicted_classes(np.array([[-1.0], [2.0]])).tolist()
[0, 1]
>>> predicted_classes(np.array([[0.1, 0.9, 0.0]])).tolist()
[1]
"""

from __future__ import annotations

import logging

import numpy as np

__all__ = ["logit_rows", "predicted_classes"]

logger = logging.getLogger(__name__)


def logit_rows(n_classes: int) -> int:
    """Rows of a linear head's weights for ``n_classes`` classes."""
    return 1 if n_classes == 2 else n_classes


def predicted_classes(scores: np.ndarray) -> np.ndarray:
    """Class indices from a linear head's scores ``(n, logit_rows)``."""
    if scores.shape[1] == 1:
        return (scores[:, 0] > 0).astype(np.int64)
    return scores.argmax(axis=1)
