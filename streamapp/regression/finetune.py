"""Fine-tuning for a regression bundle: the top backbone layers plus the linear head, trained
online on a squared or Huber loss.

The classifiers' :class:`~streamapp.model.finetune.FinetuneHead` with one output (the value)
and a regression loss; steps run on torch's autograd (the numpy Adam of the classifiers is
written for their cross-entropy). As there, labels wait in a buffer until a step is full, so
the head after N labels is the same however they were batched, and the frozen source model
(top as loaded plus source head) is kept for the guard.

>>> import torch
>>> from torch import nn
>>> torch.manual_seed(0)  # doctest: +ELLIPSIS
<torch._C.Generator object at ...>
>>> top = nn.Sequential(nn.Linear(3, 8), nn.ReLU())
>>> head = RegressionFinetuneHead(top, np.zeros((1, 8)), np.zeros(1), lr=0.05, step_size=20)
>>> X = np.random.default_rng(0).normal(size=(400, 3))
>>> y = X @ np.array([1.0, -2.0, 0.5]) + 3.0
>>> before = float(np.abs(head.predict_many(X) - y).mean())
>>> for start in range(0, 400, 50):
...     head.learn_many(X[start : start + 50], y[start : start + 50])
>>> head.n_learned, float(np.abs(head.predict_many(X) - y).mean()) < before / 2
(400, True)
>>> bool((head.source_predict_many(X) == 0).all())  # the frozen source model is kept
True
"""

from __future__ import annotations

import logging
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from streamapp.model.finetune import FinetuneHead
from streamapp.model.head import HeadState

__all__ = ["RegressionFinetuneHead"]

logger = logging.getLogger(__name__)


class RegressionFinetuneHead(FinetuneHead):
    """The top layers and the head of a regression bundle, learned online (see the module).

    Parameters are :class:`~streamapp.model.finetune.FinetuneHead`'s, without classes, plus
    ``loss`` (``squared`` or ``huber``) and ``huber_delta`` (Huber's quadratic zone, in the
    target's unit: one wild label moves the weights a bounded step).
    """

    def __init__(
        self,
        top: nn.Module,
        coef: np.ndarray,
        intercept: np.ndarray,
        *,
        loss: Literal["squared", "huber"] = "squared",
        huber_delta: float = 1.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(top, coef, intercept, ["value"], numpy_step=False, **kwargs)
        self.classes = []  # a regression head has none
        self._loss = nn.MSELoss() if loss == "squared" else nn.HuberLoss(delta=huber_delta)
        self._buffer_y = np.empty(0, np.float64)

    def predict_many(self, X: np.ndarray) -> np.ndarray:
        """Values for the rows of ``X`` (activations at the cut)."""
        return self._scores(self.net, X)[:, 0]

    def source_predict_many(self, X: np.ndarray) -> np.ndarray:
        """What the frozen source model says."""
        return self._scores(self.source, X)[:, 0]

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        """The ``(n, 1)`` output rows the pipeline serves (the value)."""
        return self._scores(self.net, X)

    def source_proba_many(self, X: np.ndarray) -> np.ndarray:
        return self._scores(self.source, X)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """Buffer the targets; one optimizer step per full ``step_size``, in order."""
        if len(y) == 0:
            return
        targets = np.asarray(y, np.float64)
        if not np.isfinite(targets).all():
            raise ValueError("non-finite target")  # the codec dead-letters them before this
        X = np.asarray(X, np.float64)
        self._buffer_X = np.concatenate([self._buffer_X, X]) if self.pending else X.copy()
        self._buffer_y = np.concatenate([self._buffer_y, targets])
        while len(self._buffer_y) >= self.step_size:
            self._step(self._buffer_X[: self.step_size], self._buffer_y[: self.step_size])
            self._buffer_X = self._buffer_X[self.step_size :]
            self._buffer_y = self._buffer_y[self.step_size :]

    def _torch_step(self, X: np.ndarray, y: np.ndarray) -> float:
        x = torch.as_tensor(X, dtype=self.dtype, device=self.device)
        target = torch.as_tensor(y, dtype=self.dtype, device=self.device).reshape(-1, 1)
        self._optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.net(x), target)
        loss.backward()
        self._optimizer.step()
        return float(loss.detach().cpu())

    def load_state_dict(self, state: HeadState) -> None:
        super().load_state_dict(state)
        self._buffer_y = np.array(state["buffer_y"], np.float64)
