"""The rows a regression head learns on: the frozen backbone's embedding and, beside it, the
standardized inputs themselves.

A linear head on the embedding alone can only recombine what the source task taught the
backbone to extract; after a shift that reshuffles which inputs matter, a from-scratch linear
model on the raw inputs can beat it. With the inputs beside the embedding (weights starting at
0, so the first event is scored exactly as the source model scores it), that linear model is
always within the head's reach.

>>> wide = WithInputs(lambda X: X[:, :1] * 2, np.array([1.0, 0.0]), np.array([2.0, 1.0]))
>>> wide(np.array([[3.0, 0.5], [np.nan, 9.0]], np.float32)).tolist()
[[6.0, 1.0, 0.5], [nan, 0.0, 5.0]]
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

__all__ = ["CLIP", "WithInputs"]

logger = logging.getLogger(__name__)

CLIP = 5.0  # standardized inputs beyond ±5 are clipped: one wild value must not swing the head


class WithInputs:
    """``embed(X)`` with the inputs standardized by the source ``mean`` and ``std`` beside it
    (a missing value, NaN, is the source mean: 0)."""

    def __init__(
        self, embed: Callable[[np.ndarray], np.ndarray], mean: np.ndarray, std: np.ndarray
    ) -> None:
        self.embed = embed
        self.mean = np.asarray(mean, np.float32)
        self.scale = np.asarray(1.0 / np.where(np.asarray(std) > 0, std, 1.0), np.float32)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        z = np.clip((np.asarray(X, np.float32) - self.mean) * self.scale, -CLIP, CLIP)
        return np.hstack([self.embed(X), np.nan_to_num(z, nan=0.0)])
