"""A linear regression head that starts from the source head and adapts online.

Two solvers, one step per ``step_size`` labels in label order:

- ``ridge`` (the default): exponentially weighted recursive ridge regression anchored at the
  source head, ``w = argmin sum_i forget^(t-i) (y_i - x_i w)^2 + prior |w - w_source|^2``:
  second order, so it follows a drift in a few hundred labels whatever the embedding's
  conditioning; ``forget`` sets the memory (``1 / (1 - forget)`` labels), ``prior`` how strongly
  the source head holds with few labels.
- ``sgd``: normalized gradient steps on a squared or Huber loss (first order, cheaper).

Labels wait in a step buffer (part of the state) until a step is full, so the head after N
labels is the same however they were batched (a live run and its replay cut batches
differently), as the classifiers' fine-tuning steps are.

>>> rng = np.random.default_rng(0)
>>> E = rng.normal(size=(2000, 3))
>>> y = E @ np.array([1.0, -2.0, 0.5]) + 3.0
>>> head = LinearRegressionHead(np.zeros(3), 0.0, solver="sgd", lr=0.2, step_size=10)
>>> for start in range(0, 2000, 100):
...     head.learn_many(E[start : start + 100], y[start : start + 100])
>>> head.coef.round(2).tolist(), round(head.intercept, 2), head.n_learned
([1.0, -2.0, 0.5], 3.0, 2000)
>>> ridge = LinearRegressionHead(np.zeros(3), 0.0, prior=0.1, step_size=10)
>>> ridge.learn_many(E[:200], y[:200])
>>> ridge.coef.round(2).tolist(), round(ridge.intercept, 2)
([1.0, -2.0, 0.5], 3.0)
"""

from __future__ import annotations

import logging
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["LinearRegressionHead", "Loss", "RegressionHead", "Solver"]

logger = logging.getLogger(__name__)

Loss = Literal["squared", "huber"]
Solver = Literal["ridge", "sgd"]


class RegressionHead(Protocol):
    """What the regression pipeline needs from a head (this one, or the fine-tuning head of
    :mod:`streamapp.regression.finetune`)."""

    classes: list[str]

    @property
    def n_learned(self) -> int: ...
    def predict_many(self, X: np.ndarray) -> np.ndarray: ...
    def source_predict_many(self, X: np.ndarray) -> np.ndarray: ...
    def predict_proba_many(self, X: np.ndarray) -> np.ndarray: ...
    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None: ...
    def state_dict(self) -> dict[str, Any]: ...
    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class LinearRegressionHead:
    """``value = embedding @ coef + intercept``, learned online.

    Parameters
    ----------
    coef, intercept
        The source head: where learning starts (parameter transfer).
    solver
        ``ridge`` or ``sgd`` (see the module docstring).
    forget, prior
        The ridge solver's memory and pull towards the source head.
    loss
        The sgd solver's loss: ``squared``, or ``huber`` (squared within ``huber_delta`` of
        the target, linear beyond: one wild label moves the head a bounded step).
    lr
        The step size, normalized by the rows' mean squared norm (normalized LMS: stable for
        ``0 < lr < 2`` whatever the embedding's scale).
    step_size
        Labels per gradient step.
    """

    def __init__(
        self,
        coef: np.ndarray,
        intercept: float,
        *,
        solver: Solver = "ridge",
        forget: float = 0.999,
        prior: float = 10.0,
        loss: Loss = "squared",
        huber_delta: float = 1.0,
        lr: float = 0.5,
        step_size: int = 50,
        l2: float = 0.0,
    ) -> None:
        if solver not in ("ridge", "sgd"):
            raise ValueError(f"solver must be 'ridge' or 'sgd', got {solver!r}")
        if loss not in ("squared", "huber"):
            raise ValueError(f"loss must be 'squared' or 'huber', got {loss!r}")
        if step_size < 1:
            raise ValueError(f"step_size must be positive, got {step_size}")
        self.source_coef = np.asarray(coef, np.float64).copy()
        self.source_intercept = float(intercept)
        self.solver = solver
        self.forget = forget
        self.prior = prior
        self.loss = loss
        self.huber_delta = huber_delta
        self.lr = lr
        self.step_size = step_size
        self.l2 = l2
        self._reset()

    def _reset(self) -> None:
        self.coef = self.source_coef.copy()
        self.intercept = self.source_intercept
        self._steps = 0
        dim = len(self.coef)
        # the ridge solver's weighted sums over [embedding, 1]: Gram matrix and moments
        self._gram = np.zeros((dim + 1, dim + 1))
        self._moment = np.zeros(dim + 1)
        self._buffer_X = np.empty((0, dim), np.float64)  # labels waiting for a full step
        self._buffer_y = np.empty(0, np.float64)

    classes: list[str] = []  # noqa: RUF012 - a regression head has none (OnlineHead's seam)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Values for the rows of ``X``."""
        return np.asarray(X, np.float64) @ self.coef + self.intercept

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        """The ``(n, 1)`` output rows the pipeline serves and the ledger keeps (the head
        protocol's seam; for a regression model the one column is the value)."""
        return self.predict_many(X)[:, None]

    def source_predict_many(self, X: np.ndarray) -> np.ndarray:
        """What the frozen source head says."""
        return np.asarray(X, np.float64) @ self.source_coef + self.source_intercept

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """Learn ``y`` (finite numbers) for the rows of ``X``, in order.

        Raises ValueError on a non-finite label or embedding, before learning any row: one
        NaN in the Gram matrix would poison every later step (the worker dead-letters such
        labels before they get here)."""
        new_X, new_y = np.asarray(X, np.float64), np.asarray(y, np.float64)
        if not (np.isfinite(new_y).all() and np.isfinite(new_X).all()):
            bad = ~np.isfinite(new_y) | ~np.isfinite(new_X).reshape(len(new_y), -1).all(axis=1)
            raise ValueError(f"non-finite label or embedding in rows {np.flatnonzero(bad)[:10]}")
        X = np.concatenate([self._buffer_X, new_X])
        y = np.concatenate([self._buffer_y, new_y])
        full = len(y) // self.step_size * self.step_size
        for start in range(0, full, self.step_size):
            self._step(X[start : start + self.step_size], y[start : start + self.step_size])
        self._buffer_X, self._buffer_y = X[full:].copy(), y[full:].copy()

    @property
    def n_learned(self) -> int:
        """Labels learned (those waiting for a full step included)."""
        return self._steps * self.step_size + len(self._buffer_y)

    def _step(self, X: np.ndarray, y: np.ndarray) -> None:
        self._steps += 1
        if self.solver == "ridge":
            self._ridge_step(X, y)
            return
        residual = X @ self.coef + self.intercept - y
        if self.loss == "huber":  # the gradient of the Huber loss: the residual, clipped
            residual = np.clip(residual, -self.huber_delta, self.huber_delta)
        n = len(y)
        rate = self.lr / (1.0 + float(np.einsum("ij,ij->", X, X)) / n)  # 1 +: the intercept
        self.coef -= rate * (X.T @ residual / n + self.l2 * self.coef)
        self.intercept -= rate * float(residual.mean())

    def _ridge_step(self, X: np.ndarray, y: np.ndarray) -> None:
        with np.errstate(over="ignore", invalid="ignore"):  # an overflow is caught below
            self._ridge_solve(X, y)

    def _ridge_solve(self, X: np.ndarray, y: np.ndarray) -> None:
        Xa = np.hstack([X, np.ones((len(y), 1))])
        decay = self.forget ** len(y)
        gram = decay * self._gram + Xa.T @ Xa
        moment = decay * self._moment + Xa.T @ y
        source = np.append(self.source_coef, self.source_intercept)
        system = gram + self.prior * np.eye(len(source))
        target = moment + self.prior * source
        try:
            w = np.linalg.solve(system, target)
        except np.linalg.LinAlgError:  # numerically singular (huge or degenerate rows)
            w = np.linalg.lstsq(system, target, rcond=None)[0]
        if not np.isfinite(w).all():  # rows beyond float range: skipped, sums and weights kept
            logger.warning("a ridge step overflowed: its %d labels are skipped", len(y))
            return
        self._gram, self._moment = gram, moment
        self.coef, self.intercept = np.asarray(w[:-1], np.float64), float(w[-1])

    def state_dict(self) -> dict[str, Any]:
        """The head, the ridge solver's weighted sums and the labels waiting for a step (the
        source head and the settings are not in it: they come from the bundle and config)."""
        return {
            "kind": "linear-regression",
            "coef": self.coef.copy(),
            "intercept": self.intercept,
            "steps": self._steps,
            "gram": self._gram.copy(),
            "moment": self._moment.copy(),
            "buffer_X": self._buffer_X.copy(),
            "buffer_y": self._buffer_y.copy(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict` into a head built with the same source head.

        A state of another width (taken with ``regression.with_inputs`` otherwise set: the
        inputs' columns follow the embedding's) keeps what the two share, the embedding's
        weights and their sums, and starts the other columns at 0, with a log line."""
        if state.get("kind", "linear-regression") != "linear-regression" or "coef" not in state:
            raise ValueError(
                f"not a linear regression head's state (kind {state.get('kind')!r}): "
                "finetune.layers changed since it was saved"
            )
        self._reset()
        width = len(self.source_coef)
        coef = np.asarray(state["coef"], np.float64)
        if len(coef) != width:
            logger.warning(
                "a head state of width %d restored into width %d (regression.with_inputs "
                "changed?): the shared columns are kept, the others start at 0",
                len(coef),
                width,
            )
        self.coef = _columns(coef, width)
        self.intercept = float(state["intercept"])
        self._steps = int(state["steps"])
        self._gram = _square(np.asarray(state["gram"], np.float64), width + 1)
        self._moment = _columns(np.asarray(state["moment"], np.float64), width + 1, last=True)
        buffer = np.asarray(state["buffer_X"], np.float64).reshape(-1, len(coef))
        self._buffer_X = np.zeros((len(buffer), width))
        shared = min(width, len(coef))
        self._buffer_X[:, :shared] = buffer[:, :shared]
        self._buffer_y = np.asarray(state["buffer_y"], np.float64)


def _columns(values: np.ndarray, width: int, *, last: bool = False) -> np.ndarray:
    """``values`` cut or padded with zeros to ``width``; with ``last``, its last entry (the
    intercept's) stays last.

    >>> _columns(np.array([1.0, 2.0, 9.0]), 4, last=True).tolist()
    [1.0, 2.0, 0.0, 9.0]
    >>> _columns(np.array([1.0, 2.0, 3.0]), 2).tolist()
    [1.0, 2.0]
    """
    if last:
        return np.append(_columns(values[:-1], width - 1), values[-1])
    out = np.zeros(width)
    shared = min(width, len(values))
    out[:shared] = values[:shared]
    return out


def _square(gram: np.ndarray, size: int) -> np.ndarray:
    """A Gram matrix over ``[columns..., 1]`` cut or padded to ``size`` (the intercept's row
    and column stay last)."""
    if len(gram) == size:
        return gram.copy()
    shared = min(size, len(gram)) - 1
    out = np.zeros((size, size))
    out[:shared, :shared] = gram[:shared, :shared]
    out[:shared, -1] = gram[:shared, -1]
    out[-1, :shared] = gram[-1, :shared]
    out[-1, -1] = gram[-1, -1]
    return out
