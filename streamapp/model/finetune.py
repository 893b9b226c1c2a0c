"""Online fine-tuning of the top backbone layers plus the head (feature transfer, trained).

The backbone is cut in two: the lower part stays frozen and runs once per served batch (its
output, the *activations at the cut*, is what the ledger keeps), and :class:`FinetuneHead`
holds the top ``k`` layers plus the linear head as one torch module that learns from the
joined labels with a torch optimizer (``sgd`` or ``adam``). ``layers=0`` is today's
head-only path and does not come here.

Updates are batch-invariant and deterministic: joined examples are buffered and one
optimizer step is taken per ``step_size`` examples, in arrival order, so how the labels were
grouped into poll batches (which differs after a restart) does not change the weights; on
CPU the math is float64. The state (trainable weights, optimizer moments, the partial
buffer) is plain arrays plus JSON, so a restore is bitwise.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal, cast

import numpy as np
import torch
from torch import nn

from streamapp.model.backbone import copy_backbone, numpy_forward, numpy_layers, plain_layers
from streamapp.model.head import HeadState, ovr_proba
from streamapp.model.logits import logit_rows
from streamapp.settings import FinetuneSettings

__all__ = ["FinetuneHead", "FinetuneSettings", "cut_width", "split_backbone"]

logger = logging.getLogger(__name__)

Layers = int | Literal["all", "auto"]


def _sequence(backbone: nn.Module) -> nn.Sequential | None:
    """The backbone's layer sequence (``nn.Sequential`` itself or its ``layers``)."""
    if isinstance(backbone, nn.Sequential):
        return backbone
    layers = getattr(backbone, "layers", None)
    return layers if isinstance(layers, nn.Sequential) else None


def split_backbone(backbone: nn.Module, layers: Layers) -> tuple[nn.Module, nn.Module]:
    """``(frozen lower part, trainable top part)``: the top ``layers`` layers with weights
    (and what follows each, e.g. its activation); ``"all"`` or more than there are cuts at
    the input. Copies: the bundle's backbone is left as loaded.

    A backbone that is not a layer sequence (e.g. an imported ``torch.export`` program)
    can only be trained whole (``"all"``).

    >>> from streamapp.model.backbone import MLPBackbone
    >>> lower, top = split_backbone(MLPBackbone(4, [8], 3), 1)
    >>> tuple(lower(torch.zeros(2, 4)).shape), tuple(top(torch.zeros(2, 8)).shape)
    ((2, 8), (2, 3))
    >>> isinstance(split_backbone(MLPBackbone(4, [8], 3), "all")[0], nn.Identity)
    True
    """
    if layers == 0:
        raise ValueError("layers=0 is the head-only path: nothing to split")
    sequence = _sequence(backbone)
    if sequence is None:
        if layers not in ("all", "auto"):
            raise ValueError(
                f"cannot cut a {type(backbone).__name__} backbone at layer {layers}: "
                "fine-tune all of it (layers=all) or the head only (layers=0)"
            )
        return nn.Identity(), copy_backbone(backbone)
    children = list(sequence.children())
    weighted = [i for i, m in enumerate(children) if any(True for _ in m.parameters())]
    if isinstance(layers, str) or layers >= len(weighted):  # "all" or "auto"
        return nn.Identity(), copy_backbone(sequence)
    if layers < 0:
        raise ValueError(f"layers must be >= 0 or 'all', got {layers}")
    cut = weighted[-layers]
    return (
        copy_backbone(nn.Sequential(*children[:cut])),
        copy_backbone(nn.Sequential(*children[cut:])),
    )


def cut_width(lower: nn.Module, input_dim: int) -> int:
    """Width of the activations at the cut (what the ledger stores per pending row)."""
    with torch.inference_mode():
        return int(lower(torch.zeros(1, input_dim)).shape[1])


def _amsgrad(head: FinetuneHead) -> bool:
    return bool(head._optimizer.param_groups[0].get("amsgrad", False))


def _view(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor's memory (writes go to the tensor)."""
    return tensor.detach().numpy()


@functools.cache
def _eye(n: int) -> np.ndarray:
    return np.eye(n)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


def _fast(optimizer: type[torch.optim.Optimizer]) -> dict[str, Any]:
    """``fused=True`` where this torch's ``optimizer`` has fused kernels, else ``foreach``."""
    return {"fused": True} if "fused" in inspect.signature(optimizer).parameters else {}


class _FlatAdam:
    """Trainable parameters, their gradients and Adam moments, each one contiguous float64
    vector that the torch parameters and the optimizer's moment tensors are views of: a
    step's update is a few vector operations, not a few per parameter, with the same
    elementwise formula (and so the same bits) as torch's per-tensor Adam."""

    def __init__(self, layers: list[nn.Module]) -> None:
        params = [p for layer in layers for p in layer.parameters()]
        self.params = params
        bounds = np.cumsum([0] + [p.numel() for p in params])
        self.spans = list(itertools.pairwise(bounds.tolist()))
        self.values = np.empty(bounds[-1], np.float64)
        self.grads = np.empty_like(self.values)
        self.m, self.v = np.zeros_like(self.values), np.zeros_like(self.values)
        self.value: dict[torch.Tensor, np.ndarray] = {}
        self.grad: dict[torch.Tensor, np.ndarray] = {}
        for param, (a, b) in zip(params, self.spans, strict=True):
            self.values[a:b] = _view(param).ravel()
            param.data = torch.from_numpy(self.values[a:b]).view(param.shape)
            self.value[param] = self.values[a:b].reshape(param.shape)
            self.grad[param] = self.grads[a:b].reshape(param.shape)
        # per layer, (weight, bias, their gradients) as views, or None for a ReLU
        self.layers = [
            (
                self.value[layer.weight],
                self.value[layer.bias],
                self.grad[layer.weight],
                self.grad[layer.bias],
            )
            if isinstance(layer, nn.Linear)
            else None
            for layer in layers
        ]
        self._bound: torch.optim.Optimizer | None = None  # whose moment tensors are views
        self._steps: list[np.ndarray] = []

    def adam(self, optimizer: torch.optim.Optimizer) -> None:
        """torch's Adam update (amsgrad off) with the gradients in :attr:`grads`, in place on
        the parameters and on the moments ``optimizer`` holds (its state dict stays what it
        was)."""
        if optimizer is not self._bound:
            self._bind(optimizer)
        group = optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        for step in self._steps:
            step += 1
        steps = {float(step) for step in self._steps}
        if len(steps) > 1:  # a foreign state whose parameters stepped apart: one by one
            for (a, b), step in zip(self.spans, self._steps, strict=True):
                self._update(slice(a, b), float(step), beta1, beta2, lr, eps, decay)
            return
        self._update(slice(None), steps.pop(), beta1, beta2, lr, eps, decay)

    def _update(
        self, part: slice, t: float, beta1: float, beta2: float, lr: float, eps: float, decay: float
    ) -> None:
        value, m, v = self.values[part], self.m[part], self.v[part]
        g = self.grads[part] + decay * value if decay else self.grads[part]
        m += (g - m) * (1 - beta1)
        v *= beta2
        v += (g * g) * (1 - beta2)
        denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
        value -= (lr / (1 - beta1**t)) * (m / denom)

    def _bind(self, optimizer: torch.optim.Optimizer) -> None:
        """Make ``optimizer``'s moments views of :attr:`m` and :attr:`v` (values kept); on
        its first step, create them as torch's Adam does."""
        self._steps = []
        for param, (a, b) in zip(self.params, self.spans, strict=True):
            slots = optimizer.state[param]
            if not slots:  # what torch's Adam puts there on its first step
                slots["step"] = torch.tensor(0.0)
                slots["exp_avg"] = torch.zeros_like(param)
                slots["exp_avg_sq"] = torch.zeros_like(param)
            for name, store in (("exp_avg", self.m), ("exp_avg_sq", self.v)):
                store[a:b] = _view(slots[name]).ravel()
                slots[name] = torch.from_numpy(store[a:b]).view(param.shape)
            self._steps.append(_view(slots["step"]))
        self._bound = optimizer


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
        self._loss = nn.BCEWithLogitsLoss()
        # a CPU Adam over Linear/ReLU layers steps in numpy (see _numpy_step)
        layers = plain_layers(self.net)
        self._plain = (
            layers
            if numpy_step
            and layers
            and isinstance(layers[-1], nn.Linear)  # logits out: the step's loss is on them
            and self.device.type == "cpu"
            and optimizer == "adam"
            and not _amsgrad(self)
            else None
        )
        self._flat = _FlatAdam(self._plain) if self._plain is not None else None
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
        return self._plain is not None

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
        if self._plain is not None:
            self._numpy_step(X, y)
            return
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
        self.last_loss = float(loss.detach().cpu())
        self.n_learned += len(y)

    def _numpy_step(self, X: np.ndarray, y: np.ndarray) -> None:
        """The same step as :meth:`_step` (BCE-with-logits mean loss, backward, Adam as torch
        writes it) in numpy on views of the torch weights and moments: on CPU each torch op
        costs its dispatch, which on a small net is most of a step (5x its arithmetic)."""
        assert self._flat is not None
        layers = self._flat.layers
        inputs: list[np.ndarray] = []
        h = np.asarray(X, np.float64)
        for layer in layers:  # forward, keeping what the backward pass needs
            inputs.append(h)
            h = np.maximum(h, 0.0) if layer is None else h @ layer[0].T + layer[1]
        rows = h.shape[1]
        target = y.astype(np.float64).reshape(-1, 1) if rows == 1 else _eye(rows)[np.asarray(y)]
        # log(1 + exp(-|z|)) + max(z, 0) - z t: torch's stable BCE-with-logits, mean-reduced
        loss = np.logaddexp(0.0, -np.abs(h)) + np.maximum(h, 0.0) - h * target
        grad = (_sigmoid(h) - target) / h.size
        for index in range(len(layers) - 1, -1, -1):
            layer, inp = layers[index], inputs[index]
            if layer is None:
                grad = grad * (inp > 0.0)
                continue
            weight, _, weight_grad, bias_grad = layer
            np.matmul(grad.T, inp, out=weight_grad)
            np.sum(grad, axis=0, out=bias_grad)
            if index:
                grad = grad @ weight
        self._flat.adam(self._optimizer)
        self.last_loss = float(loss.mean())
        self.n_learned += len(y)

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
