"""The fine-tuning head: the top backbone layers plus the linear head, trained online.

The backbone is cut in two (:mod:`streamapp.model.surgery`): the lower part stays frozen and
runs once per served batch (its output, the *activations at the cut*, is what the ledger
keeps), and :class:`FinetuneHead` holds the top ``k`` layers plus the linear head as one
torch module that learns from the joined labels with a torch optimizer (``sgd`` or
``adam``); a CPU Adam over Linear/ReLU layers steps in numpy (:mod:`streamapp.model.flat_adam`).
``layers=0`` is today's head-only path and does not come here.

Updates are batch-invariant and deterministic: joined examples are buffered and one
optimizer step is taken per ``step_size`` examples, in arrival order, so how the labels were
grouped into poll batches (which differs after a restart) does not change the weights; on
CPU the math is float64. The state (trainable weights, optimizer moments, the partial
buffer) is plain arrays plus JSON, so a restore is bitwise.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from streamapp.model.backbone import copy_backbone, numpy_forward, numpy_layers, plain_layers
from streamapp.model.flat_adam import FlatAdam
from streamapp.model.head import HeadState, ovr_proba
from streamapp.model.logits import logit_rows

__all__ = ["FinetuneHead"]

logger = logging.getLogger(__name__)


def _fast(optimizer: type[torch.optim.Optimizer]) -> dict[str, Any]:
    """``fused=True`` where this torch's ``optimizer`` has fused kernels, else ``foreach``."""
    return {"fused": True} if "fused" in inspect.signature(optimizer).parameters else {}


class FinetuneHead:
    """The top backbone layers plus a one-vs-rest logistic head, trained online.

    Same protocol as :class:`~streamapp.model.head.OnlineHead`; ``X`` holds activations at
    the cut. ``source_proba_many`` scores the frozen source model (the top as loaded plus
    the source head) on the same activations, for the guard and the drift report.

    >>> top = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    >>> with torch.no_grad():
    ...     _ = top[0].weight.copy_(torch.eye(2)), top[0].bias.zero_()
    >>> head = FinetuneHead(top, np.array([[1.0, -1.0]]), np.zeros(1), ["a", "b"], step_size=10)
    >>> X, y = np.array([[0.0, 2.0]] * 30), np.zeros(30, np.int64)
    >>> int(head.predict_proba_many(X[:1]).argmax())
    0
    >>> head.learn_many(X[:25], y[:25]); head.n_learned, head.pending
    (20, 5)
    >>> before = head.state_dict()
    >>> head.learn_many(X[25:], y[25:]); head.load_state_dict(before); head.n_learned
    20
    """

    def __init__(
        self,
        top: nn.Module,
        coef: np.ndarray,
        intercept: np.ndarray,
        classes: Sequence[str],
        *,
        optimizer: Literal["sgd", "adam"] = "adam",
        lr: float = 1e-2,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        step_size: int = 50,
        device: str = "cpu",
        numpy_step: bool = True,
    ) -> None:
        """``numpy_step=False`` keeps every step on torch's autograd and optimizer, where it
        would otherwise run in numpy (a CPU Adam over Linear/ReLU layers: the same steps)."""
        self.classes = [str(c) for c in classes]
        rows = logit_rows(len(self.classes))
        if coef.ndim != 2 or coef.shape[0] != rows or intercept.shape != (rows,):
            shapes = f"{coef.shape}/{intercept.shape}"
            raise ValueError(f"head weights {shapes} do not fit {len(self.classes)} classes")
        self.device = torch.device(device)
        # float64 on CPU: replays are bitwise; float32 on a GPU, where speed is the point
        self.dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        linear = nn.Linear(coef.shape[1], rows)
        with torch.no_grad():
            linear.weight.copy_(torch.from_numpy(np.asarray(coef, np.float64)))
            linear.bias.copy_(torch.from_numpy(np.asarray(intercept, np.float64)))
        net = nn.Sequential(copy_backbone(top), linear).to(self.device, self.dtype)
        self.net = net.train().requires_grad_(True)
        self.source = copy_backbone(net).eval().requires_grad_(False)
        self.optimizer_name = optimizer
        self.lr, self.weight_decay, self.momentum = lr, weight_decay, momentum
        self.step_size = step_size
        self._optimizer = self._make_optimizer()
        self._loss: nn.Module = nn.BCEWithLogitsLoss()
        # a CPU Adam over Linear/ReLU layers steps in numpy (see FlatAdam.step)
        layers = plain_layers(self.net) if numpy_step else None
        self._flat = FlatAdam.over(layers, self._optimizer, self.device)
        # plain Linear/ReLU nets on the CPU score in numpy, on views of their weights
        self._layers = {net: numpy_layers(net) for net in (self.net, self.source)}
        self._buffer_X = np.empty((0, 0), np.float64)  # its width is the cut's: set on learning
        self._buffer_y = np.empty(0, np.int64)
        self.n_learned = 0
        self.last_loss = 0.0

    def _make_optimizer(self) -> torch.optim.Optimizer:
        params = list(self.net.parameters())
        # the fused kernels (one per parameter, same formula) take a step in about half the
        # time of the per-tensor loop on a small net, where each op's dispatch dominates;
        # the state (step, moments) is the same, and each kind is deterministic
        if self.optimizer_name == "adam":
            return torch.optim.Adam(
                params, lr=self.lr, weight_decay=self.weight_decay, **_fast(torch.optim.Adam)
            )
        if self.optimizer_name == "sgd":
            return torch.optim.SGD(
                params,
                lr=self.lr,
                weight_decay=self.weight_decay,
                momentum=self.momentum,
                **_fast(torch.optim.SGD),
            )
        raise ValueError(f"unknown optimizer {self.optimizer_name!r} (sgd, adam)")

    @property
    def numpy_steps(self) -> bool:
        """Whether the optimizer steps run in numpy (see ``numpy_step``)."""
        return self._flat is not None

    @property
    def pending(self) -> int:
        """Examples buffered toward the next optimizer step."""
        return len(self._buffer_y)

    def _scores(self, net: nn.Module, X: np.ndarray) -> np.ndarray:
        layers = self._layers[net]
        if layers is not None:
            return numpy_forward(layers, np.asarray(X, np.float64))
        with torch.inference_mode():
            x = torch.as_tensor(np.asarray(X), dtype=self.dtype, device=self.device)
            return net(x).to(torch.float64).cpu().numpy()

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        return ovr_proba(self._scores(self.net, X))

    def source_proba_many(self, X: np.ndarray) -> np.ndarray:
        """What the frozen source model (top as loaded + source head) gives on ``X``."""
        return ovr_proba(self._scores(self.source, X))

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """Buffer the examples; one optimizer step per full ``step_size`` of them, in order."""
        if len(y) == 0:
            return
        X = np.asarray(X, np.float64)
        self._buffer_X = np.concatenate([self._buffer_X, X]) if self.pending else X.copy()
        self._buffer_y = np.concatenate([self._buffer_y, np.asarray(y, np.int64)])
        while len(self._buffer_y) >= self.step_size:
            self._step(self._buffer_X[: self.step_size], self._buffer_y[: self.step_size])
            self._buffer_X = self._buffer_X[self.step_size :]
            self._buffer_y = self._buffer_y[self.step_size :]

    def _step(self, X: np.ndarray, y: np.ndarray) -> None:
        if self._flat is not None:  # the same step in numpy, on views of the same weights
            self.last_loss = self._flat.step(X, y, self._optimizer)
        else:
            self.last_loss = self._torch_step(X, y)
        self.n_learned += len(y)

    def _torch_step(self, X: np.ndarray, y: np.ndarray) -> float:
        """One step on torch's autograd and optimizer; the loss it took."""
        x = torch.as_tensor(X, dtype=self.dtype, device=self.device)
        labels = torch.as_tensor(y, device=self.device)
        rows = int(cast(nn.Linear, self.net[-1]).out_features)
        if rows == 1:
            target = labels.to(self.dtype).reshape(-1, 1)
        else:
            target = nn.functional.one_hot(labels, rows).to(self.dtype)
        self._optimizer.zero_grad(set_to_none=True)
        loss = self._loss(self.net(x), target)
        loss.backward()
        self._optimizer.step()
        return float(loss.detach().cpu())

    def is_finite(self) -> bool:
        """Weights and the last loss are finite (a diverged state is not)."""
        if not math.isfinite(self.last_loss):
            return False
        if self._flat is not None:
            return bool(np.isfinite(self._flat.values).all())
        return all(bool(torch.isfinite(p).all()) for p in self.net.parameters())

    def state_dict(self) -> HeadState:
        """Trainable weights, optimizer state and the partial step buffer: arrays + JSON."""
        weights = {k: v.detach().cpu().numpy().copy() for k, v in self.net.state_dict().items()}
        moments: dict[str, dict[str, Any]] = {}
        for index, slots in self._optimizer.state_dict()["state"].items():
            moments[str(index)] = {
                name: value.detach().cpu().numpy().copy()
                if isinstance(value, torch.Tensor)
                else value
                for name, value in slots.items()
                if value is not None
            }
        return {
            "kind": "finetune",
            "optimizer": self.optimizer_name,
            "weights": weights,
            "moments": moments,
            "buffer_X": self._buffer_X.copy(),
            "buffer_y": self._buffer_y.copy(),
            "n_learned": self.n_learned,
            "last_loss": self.last_loss,
        }

    def load_state_dict(self, state: HeadState) -> None:
        if state.get("kind") != "finetune":
            raise ValueError(f"not a fine-tuning head state: kind={state.get('kind')!r}")
        if state["optimizer"] != self.optimizer_name:
            raise ValueError(
                f"state of a {state['optimizer']} optimizer, not {self.optimizer_name}"
            )
        weights = {k: torch.as_tensor(np.asarray(v)) for k, v in state["weights"].items()}
        self.net.load_state_dict(weights)
        self._optimizer = self._make_optimizer()
        moments = {
            int(index): {
                name: torch.as_tensor(np.asarray(v)) if isinstance(v, np.ndarray) else v
                for name, v in slots.items()
            }
            for index, slots in state["moments"].items()
        }
        saved = self._optimizer.state_dict()
        self._optimizer.load_state_dict({"state": moments, "param_groups": saved["param_groups"]})
        self._buffer_X = np.array(state["buffer_X"], np.float64, ndmin=2)
        self._buffer_y = np.array(state["buffer_y"], np.int64)
        self.n_learned = int(state["n_learned"])
        self.last_loss = float(state["last_loss"])
