"""Label-free input adaptation and the from-scratch candidate (issue 33).

:class:`InputAdapter` re-estimates the input standardization on the target stream, before
any label: a shift of the inputs (a recalibrated sensor, a new population) is visible in the
features long before labels arrive. The frozen backbone then sees inputs on the scale it was
trained on. Statistics are an exponential moving average of the per-feature mean and second
moment with a configurable horizon, started from the source statistics (a cumulative mean
while that weighs a block more than ``block / horizon``).

Determinism independent of micro-batches: the statistics update in fixed *blocks* of
``block`` events, counted per event, and every event is standardized with the statistics as
of the last block completed before it. The rows of the unfinished block are kept (part of
the state) and the block's moments are computed from all of them at once, so a live run and a
replay that cut the stream into other batches compute bitwise the same.

:class:`ScratchLinear` is the cheap from-scratch candidate: a multinomial logistic
regression on the standardized raw features, learned by SGD on the joined labels in fixed
mini-batches of ``step`` labels (again counted per label, the unfinished one kept in the
state). It knows nothing before its first labels; it wins where the transfer model's
features do not fit the target.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.normal(5.0, 2.0, (400, 3))  # the target: shifted and scaled against the source
>>> one = InputAdapter(np.zeros(3), np.ones(3), horizon=100, block=10, shrink=0)
>>> two = InputAdapter(np.zeros(3), np.ones(3), horizon=100, block=10, shrink=0)
>>> a = one.standardize(X)
>>> cuts = [X[:7], X[7:123], X[123:]]
>>> b = np.concatenate([two.standardize(part) for part in cuts])
>>> bool((a == b).all())  # the same, however the stream is cut into batches
True
>>> bool(abs(a[-100:].mean()) < 0.5 and abs(a[-100:].std() - 1.0) < 0.3)  # re-standardized
True
>>> bool(np.allclose(a[:10], X[:10]))  # the first block: the source standardization
True
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

__all__ = ["InputAdapter", "ScratchLinear"]

logger = logging.getLogger(__name__)


class InputAdapter:
    """Per-feature target standardization ``z = (x - m_t) / s_t`` from a moving estimate of
    the target mean ``m_t`` and standard deviation ``s_t``, updated in fixed blocks.

    Parameters
    ----------
    mean, std
        The bundle's source standardization (what the embedder subtracts and divides by).
    horizon
        Events the moving estimate averages over (``a = block / horizon`` per block);
        ``None`` keeps the cumulative mean for ever.
    block
        Events per statistics update.
    prior
        Pseudo-count of the source statistics at the start.
    source_count
        Rows the source statistics were estimated on (their own uncertainty).
    shrink
        Evidence a change of the statistics needs: per feature, the estimated change of the
        mean ``d`` (and of the log standard deviation) is applied with the weight
        ``d**2 / (d**2 + shrink * se**2)``, ``se`` its standard error from both estimates
        (source and target). A stream that did not shift keeps (nearly) the source
        standardization; a clear shift is followed in full. 0: always in full.
    enabled
        False: the source standardization, unchanged (``z = (x - mean) / std``).
    """

    def __init__(
        self,
        mean: np.ndarray,
        std: np.ndarray,
        *,
        horizon: int | None = 2000,
        block: int = 50,
        prior: float = 50.0,
        source_count: int = 1000,
        shrink: float = 64.0,
        enabled: bool = True,
        min_std_ratio: float = 1e-3,
    ) -> None:
        self.mean_b = np.asarray(mean, np.float64).ravel()
        self.std_b = np.asarray(std, np.float64).ravel()
        self.horizon = horizon
        self.block = int(block)
        self.prior = float(prior)
        self.enabled = enabled
        self.source_count = max(1, int(source_count))
        self.shrink = float(shrink)
        # a feature constant so far must not explode
        self.std_floor = np.maximum(min_std_ratio * self.std_b, 1e-8)
        # start from the source standardization itself: before the first block, the inputs
        # are standardized as without adaptation
        self.m1 = self.mean_b.copy()
        self.m2 = self.std_b**2 + self.m1**2
        self.seen = 0  # events in completed blocks
        self._pending = np.empty((0, len(self.mean_b)), np.float64)
        self._center, self._scale = self._current()

    @property
    def width(self) -> int:
        return len(self.mean_b)

    def _current(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.enabled:
            return self.mean_b, self.std_b
        sd = np.maximum(np.sqrt(np.maximum(self.m2 - self.m1 * self.m1, 0.0)), self.std_floor)
        if self.shrink <= 0:
            return self.m1.copy(), sd
        # the target estimate averages about this many rows (its horizon, once that is full)
        n_t = max(1.0, float(self.seen if self.horizon is None else min(self.seen, self.horizon)))
        d = self.m1 - self.mean_b
        se2 = self.std_b**2 / self.source_count + sd**2 / n_t
        center = self.mean_b + _weight(d, se2, self.shrink) * d
        r = np.log(sd / self.std_b)
        r_se2 = np.full_like(r, 0.5 / self.source_count + 0.5 / n_t)
        return center, self.std_b * np.exp(_weight(r, r_se2, self.shrink) * r)

    def _rate(self) -> float:
        cumulative = self.block / (self.prior + self.seen + self.block)
        if self.horizon is None:
            return cumulative
        return min(1.0, max(cumulative, self.block / self.horizon))

    def _complete(self, rows: np.ndarray) -> None:
        """One full block: fold its moments into the estimate (missing values: the current
        mean, so they move nothing)."""
        rows = np.where(np.isnan(rows), self.m1, rows)
        a = self._rate()
        self.m1 = (1.0 - a) * self.m1 + a * rows.mean(axis=0)
        self.m2 = (1.0 - a) * self.m2 + a * (rows * rows).mean(axis=0)
        self.seen += len(rows)
        self._center, self._scale = self._current()

    def standardize(self, X: np.ndarray) -> np.ndarray:
        """``z`` per row (float64), each with the statistics of the blocks completed before
        it; the rows then count towards the estimate."""
        X = np.asarray(X, np.float64)
        if not self.enabled:
            return (X - self.mean_b) / self.std_b
        out = np.empty_like(X)
        start = 0
        while start < len(X):
            take = min(len(X) - start, self.block - len(self._pending))
            rows = X[start : start + take]
            out[start : start + take] = (rows - self._center) / self._scale
            self._pending = np.concatenate([self._pending, rows])
            if len(self._pending) == self.block:
                self._complete(self._pending)
                self._pending = self._pending[:0]
            start += take
        return out

    def to_inputs(self, z: np.ndarray) -> np.ndarray:
        """Inputs the embedder's source standardization turns into ``z`` (float32)."""
        return (self.mean_b + self.std_b * z).astype(np.float32)

    def summary(self) -> dict[str, Any]:
        """For the drift report: how far the target statistics moved from the source's."""
        shift = np.abs(self._center - self.mean_b) / self.std_b
        return {
            "enabled": self.enabled,
            "events": self.seen + len(self._pending),
            "mean_shift": float(shift.mean()) if len(shift) else 0.0,
            "scale_ratio": float(np.median(self._scale / self.std_b)) if len(shift) else 1.0,
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "m1": self.m1.copy(),
            "m2": self.m2.copy(),
            "seen": self.seen,
            "pending": self._pending.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.m1 = np.array(state["m1"], np.float64)
        self.m2 = np.array(state["m2"], np.float64)
        self.seen = int(state["seen"])
        self._pending = np.array(state["pending"], np.float64).reshape(-1, self.width)
        self._center, self._scale = self._current()


def _weight(d: np.ndarray, se2: np.ndarray, shrink: float) -> np.ndarray:
    """How much of an estimated change ``d`` (variance ``se2``) to apply, in [0, 1]."""
    d2 = d * d
    return d2 / np.maximum(d2 + shrink * se2, 1e-300)


class ScratchLinear:
    """Multinomial logistic regression learned from scratch by mini-batch SGD.

    The first ``warm`` labels are learned in steps of ``step`` labels, the later ones in steps of
    ``late_step`` (each label weighing the same, ``learning_rate / step``): as accurate on the
    streams of the learning table, at half the cost per label once warm (issue 33
    bounds the cost per label).

    Its inputs are clipped to ``[-clip, clip]``: early on, a feature that was nearly constant
    in the source can be hundreds of (source) standard deviations off before the target
    statistics catch up, and one such step would throw the weights far off.

    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> Z = rng.normal(size=(600, 4)); y = (Z[:, 0] > 0).astype(np.int64)
    >>> one, two = ScratchLinear(4, 2), ScratchLinear(4, 2)
    >>> one.learn_many(Z, y); two.learn_many(Z[:5], y[:5]); two.learn_many(Z[5:], y[5:])
    >>> bool((one.coef == two.coef).all()), one.n_learned  # any cut of the labels: the same weights
    (True, 600)
    >>> float((one.predict_proba_many(Z).argmax(1) == y).mean()) > 0.95
    True
    """

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        *,
        learning_rate: float = 0.2,
        step: int = 8,
        clip: float = 5.0,
        late_step: int = 16,
        warm: int = 2000,
    ) -> None:
        self.lr = float(learning_rate)
        self.clip = float(clip)
        self.step = int(step)
        self.late_step = max(int(late_step), self.step)
        self.warm = -(-int(warm) // self.step) * self.step  # whole early steps: any cut agrees
        # weights and intercept in one matrix: the inputs get a column of ones, so a step
        # is one product forward and one back (this runs per ``step`` labels)
        self._Wb = np.zeros((n_classes, n_features + 1), np.float64)
        self.n_learned = 0
        self._Z = np.empty((0, n_features), np.float64)
        self._y = np.empty(0, np.int64)

    @property
    def coef(self) -> np.ndarray:
        return self._Wb[:, :-1]

    @property
    def intercept(self) -> np.ndarray:
        return self._Wb[:, -1]

    def predict_proba_many(self, Z: np.ndarray) -> np.ndarray:
        s = self._inputs(Z) @ self.coef.T + self.intercept
        s -= s.max(axis=1, keepdims=True)
        e = np.exp(s)
        return e / e.sum(axis=1, keepdims=True)

    def _inputs(self, Z: np.ndarray) -> np.ndarray:
        """Finite, clipped inputs (a missing value: 0, the mean)."""
        Z = np.asarray(Z, np.float64)
        missing = np.isnan(Z)
        if missing.any():
            Z = np.where(missing, 0.0, Z)
        return np.clip(Z, -self.clip, self.clip)

    def learn_many(self, Z: np.ndarray, y: np.ndarray) -> None:
        """Learn the labels in order, one SGD step per ``step`` labels."""
        Z = self._inputs(Z)
        y = np.asarray(y, np.int64)
        done = self.n_learned - len(self._y)
        self.n_learned += len(y)  # labels given (the last ``< step`` wait for their step)
        if len(self._y):
            Z, y = np.concatenate([self._Z, Z]), np.concatenate([self._y, y])
        early = min(len(y), max(0, self.warm - done))
        early -= early % self.step
        if early:
            self._steps(Z[:early], y[:early], self.step)
            Z, y = Z[early:], y[early:]
        step = self.step if done + early < self.warm else self.late_step
        full = len(y) - len(y) % step
        self._steps(Z[:full], y[:full], step)
        self._Z, self._y = Z[full:].copy(), y[full:].copy()

    def _steps(self, Z: np.ndarray, y: np.ndarray, step: int) -> None:
        """SGD in steps of ``step`` labels, each label weighing ``learning_rate / self.step``."""
        full = len(y)
        if full:
            ones = np.ones((full, 1))
            X = np.hstack([Z[:full], ones])
            scale = self.lr / self.step
            Y = np.zeros((full, self._Wb.shape[0]))
            Y[np.arange(full), y[:full]] = scale
            Wb = self._Wb
            for start in range(0, full, step):
                x = X[start : start + step]
                P = x @ Wb.T
                P -= P.max(axis=1, keepdims=True)
                np.exp(P, out=P)
                P *= scale / P.sum(axis=1, keepdims=True)
                P -= Y[start : start + step]
                Wb -= P.T @ x

    def state_dict(self) -> dict[str, Any]:
        return {
            "W": self.coef.copy(),
            "b": self.intercept.copy(),
            "n_learned": self.n_learned,
            "pending_Z": self._Z.copy(),
            "pending_y": self._y.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        W, b = np.asarray(state["W"], np.float64), np.asarray(state["b"], np.float64)
        self._Wb = np.hstack([W, b[:, None]])
        self.n_learned = int(state["n_learned"])
        self._Z = np.array(state["pending_Z"], np.float64).reshape(-1, W.shape[1])
        self._y = np.array(state["pending_y"], np.int64)
