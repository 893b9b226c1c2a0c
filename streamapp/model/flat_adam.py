"""The numpy optimizer step: flat parameter, gradient and moment vectors, and one step on them.

:class:`FlatAdam` holds a plain Linear/ReLU net's trainable parameters, their gradients and
Adam moments as contiguous float64 vectors that the torch tensors are views of, and takes
one step (BCE-with-logits mean loss, backward, Adam as torch writes it) in numpy: on CPU each
torch op costs its dispatch, which on a small net is most of a step (5x its arithmetic). The
float64 results are torch's, bit for bit.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math

import numpy as np
import torch
from torch import nn

__all__ = ["FlatAdam"]

logger = logging.getLogger(__name__)


def _view(tensor: torch.Tensor) -> np.ndarray:
    """A numpy view of a CPU tensor's memory (writes go to the tensor)."""
    return tensor.detach().numpy()


@functools.cache
def _eye(n: int) -> np.ndarray:
    return np.eye(n)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * z) + 1.0)


class FlatAdam:
    """Trainable parameters, their gradients and Adam moments, each one contiguous float64
    vector that the torch parameters and the optimizer's moment tensors are views of: a
    step's update is a few vector operations, not a few per parameter, with the same
    elementwise formula (and so the same bits) as torch's per-tensor Adam."""

    @classmethod
    def over(
        cls, layers: list[nn.Module] | None, optimizer: torch.optim.Optimizer, device: torch.device
    ) -> FlatAdam | None:
        """One over ``layers`` where it can take ``optimizer``'s steps: Linear/ReLU layers
        (see :func:`~streamapp.model.backbone.plain_layers`) with logits out (the step's loss
        is on them), on the CPU, under torch's Adam with amsgrad off; else None."""
        if not layers or not isinstance(layers[-1], nn.Linear) or device.type != "cpu":
            return None
        if type(optimizer) is not torch.optim.Adam:
            return None
        if optimizer.param_groups[0].get("amsgrad", False):
            return None
        return cls(layers)

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

    def step(self, X: np.ndarray, y: np.ndarray, optimizer: torch.optim.Optimizer) -> float:
        """One step on the examples ``X``, ``y`` (class indices): forward, the BCE-with-logits
        mean loss, backward into :attr:`grads`, then :meth:`adam`; the loss it took."""
        layers = self.layers
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
        self.adam(optimizer)
        return float(loss.mean())

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
