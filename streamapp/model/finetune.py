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
import logging
import math
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from streamapp.model.backbone import copy_backbone
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
    if layers in ("all", "auto") or layers >= len(weighted):
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


def _plain_layers(net: nn.Module) -> list[nn.Module] | None:
    """``net``'s layers in order when it is nested ``nn.Sequential`` of ``Linear`` and ``ReLU``
    only (ending in a Linear), else None."""
    layers: list[nn.Module] = []
    for module in net.modules():
        if isinstance(module, nn.Sequential):
            continue
        if type(module) not in (nn.Linear, nn.ReLU) or getattr(module, "inplace", False):
            return None
        layers.append(module)
    return layers if layers and isinstance(layers[-1], nn.Linear) else None


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


def _fast(optimizer: type[torch.optim.Optimizer]) -> dict[str, bool]:
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
    ) -> None:
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
        self._views: dict[torch.Tensor, tuple[torch.Tensor, tuple[np.ndarray, ...]]] = {}
        # a CPU Adam over Linear/ReLU layers steps in numpy (see _numpy_step)
        self._plain = (
            _plain_layers(self.net)
            if self.device.type == "cpu" and optimizer == "adam" and not _amsgrad(self)
            else None
        )
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
    def pending(self) -> int:
        """Examples buffered toward the next optimizer step."""
        return len(self._buffer_y)

    def _scores(self, net: nn.Module, X: np.ndarray) -> np.ndarray:
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
            self._numpy_step(X, y, self._plain)
            return
        x = torch.as_tensor(X, dtype=self.dtype, device=self.device)
        labels = torch.as_tensor(y, device=self.device)
        rows = self.net[-1].out_features
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

    def _numpy_step(self, X: np.ndarray, y: np.ndarray, layers: list[nn.Module]) -> None:
        """The same step as :meth:`_step` (BCE-with-logits mean loss, backward, Adam as torch
        writes it) in numpy on views of the torch weights and moments: on CPU each torch op
        costs its dispatch, which on a small net is most of a step (5x its arithmetic)."""
        inputs: list[np.ndarray] = []
        h = np.asarray(X, np.float64)
        for layer in layers:  # forward, keeping what the backward pass needs
            inputs.append(h)
            if isinstance(layer, nn.Linear):
                h = h @ _view(layer.weight).T + _view(layer.bias)
            else:
                h = np.maximum(h, 0.0)
        rows = h.shape[1]
        target = y.astype(np.float64).reshape(-1, 1) if rows == 1 else _eye(rows)[np.asarray(y)]
        # log(1 + exp(-|z|)) + max(z, 0) - z t: torch's stable BCE-with-logits, mean-reduced
        loss = np.logaddexp(0.0, -np.abs(h)) + np.maximum(h, 0.0) - h * target
        grad = (_sigmoid(h) - target) / h.size
        grads: list[tuple[torch.Tensor, np.ndarray]] = []
        for index in range(len(layers) - 1, -1, -1):
            layer, inp = layers[index], inputs[index]
            if isinstance(layer, nn.Linear):
                grads.append((layer.weight, grad.T @ inp))
                grads.append((layer.bias, grad.sum(axis=0)))
                if index:
                    grad = grad @ _view(layer.weight)
            else:
                grad = grad * (inp > 0.0)
        self._adam(grads)
        self.last_loss = float(loss.mean())
        self.n_learned += len(y)

    def _adam(self, grads: list[tuple[torch.Tensor, np.ndarray]]) -> None:
        """torch's Adam update (amsgrad off), in place on the parameters and on the moments
        the torch optimizer holds, so its state dict stays what it was."""
        group = self._optimizer.param_groups[0]
        beta1, beta2 = group["betas"]
        lr, eps, decay = group["lr"], group["eps"], group["weight_decay"]
        for param, grad in grads:
            step, value, m, v = self._adam_views(param)
            step += 1
            g = grad + decay * value if decay else grad
            m += (g - m) * (1 - beta1)
            v *= beta2
            v += (g * g) * (1 - beta2)
            t = float(step)
            denom = np.sqrt(v) / math.sqrt(1 - beta2**t) + eps
            value -= (lr / (1 - beta1**t)) * (m / denom)

    def _adam_views(
        self, param: torch.Tensor
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Views of ``param``'s step count, value and moments (made once; again when a
        restore replaced the optimizer's tensors)."""
        slots = self._optimizer.state[param]
        if not slots:  # what torch's Adam puts there on its first step
            slots["step"] = torch.tensor(0.0)
            slots["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            slots["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        cached = self._views.get(param)
        if cached is None or cached[0] is not slots["exp_avg_sq"]:
            views = (_view(slots["step"]), _view(param), _view(slots["exp_avg"]))
            cached = (slots["exp_avg_sq"], (*views, _view(slots["exp_avg_sq"])))
            self._views[param] = cached
        return cached[1]

    def is_finite(self) -> bool:
        """Weights and the last loss are finite (a diverged state is not)."""
        if not math.isfinite(self.last_loss):
            return False
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
