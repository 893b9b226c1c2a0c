"""The frozen feature extractor and the batched, no-grad embedding call around it."""

from __future__ import annotations

import copy
import itertools
import logging
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
    "ARCHITECTURES",
    "CNNBackbone",
    "Embedder",
    "MLPBackbone",
    "copy_backbone",
    "impute_missing",
    "numpy_forward",
    "numpy_layers",
    "plain_layers",
]

logger = logging.getLogger(__name__)


class MLPBackbone(nn.Module):
    """A plain MLP ``input -> hidden... -> embedding`` with ReLU after every layer.

    >>> net = MLPBackbone(input_dim=4, hidden=[8], embedding_dim=3)
    >>> tuple(net(torch.zeros(2, 4)).shape)
    (2, 3)
    """

    def __init__(self, input_dim: int, hidden: Sequence[int], embedding_dim: int) -> None:
        super().__init__()
        dims = [input_dim, *hidden, embedding_dim]
        layers: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise(dims):
            layers += [nn.Linear(fan_in, fan_out), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x)


class CNNBackbone(nn.Module):
    """A small CNN for image-shaped inputs ``(C, H, W)``: per entry of ``channels`` a 3x3
    convolution, ReLU and 2x2 max-pooling; then global average pooling and a linear layer
    to the embedding, with ReLU.

    >>> net = CNNBackbone(input_dim=64, embedding_dim=5, input_shape=[1, 8, 8], channels=[4, 8])
    >>> tuple(net(torch.zeros(2, 1, 8, 8)).shape)
    (2, 5)
    """

    def __init__(
        self,
        input_dim: int,
        embedding_dim: int,
        input_shape: Sequence[int],
        channels: Sequence[int] = (8, 16),
    ) -> None:
        super().__init__()
        if len(input_shape) != 3 or int(np.prod(input_shape)) != input_dim:
            raise ValueError(f"the cnn needs input_shape (C, H, W) of {input_dim} values")
        convs: list[nn.Module] = []
        for fan_in, fan_out in itertools.pairwise([input_shape[0], *channels]):
            convs += [nn.Conv2d(fan_in, fan_out, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2)]
        self.convs = nn.Sequential(*convs)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.embed = nn.Sequential(nn.Linear(channels[-1], embedding_dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.embed(self.pool(self.convs(x)).flatten(1))


# Named architectures a bundle may reference; state_dicts load into these with weights_only=True.
ARCHITECTURES: dict[str, type[nn.Module]] = {"mlp": MLPBackbone, "cnn": CNNBackbone}


def copy_backbone(backbone: nn.Module) -> nn.Module:
    """A deep copy (``.to()`` converts a module in place, and the bundle's stays as loaded)."""
    with warnings.catch_warnings():
        # a torch.export GraphModule's pytree specs warn on copy (a torch deprecation, not ours)
        warnings.simplefilter("ignore", FutureWarning)
        return copy.deepcopy(backbone)


class Embedder:
    """Standardizes a feature matrix and runs the frozen backbone once per batch.

    Parameters
    ----------
    backbone
        The frozen network; a copy of it is put in eval mode and moved to ``device``.
    mean, std
        Source-data standardization, applied before the forward pass.
    device
        ``"cpu"`` or ``"cuda"``. On CUDA each batch is copied into a reused pinned host
        buffer and crosses to the GPU in one transfer; the embeddings come back in one.
    exact
        Compute in float64 (CPU default). A float32 matrix product may round differently
        depending on how many rows share the batch, so an event replayed in another batch
        after a restart could get a slightly different embedding; in float64 that difference
        vanishes when the result is stored as float32, and replays learn bitwise the same.
    half
        On CUDA, run the backbone in float16 (faster on tensor cores; embeddings differ from
        float32 in the third or fourth digit).
    input_shape
        Events carry flat features; a backbone for shaped inputs (e.g. ``(C, H, W)`` images)
        gets each standardized row reshaped to ``(n, *input_shape)``.
    impute
        Per-feature values that replace NaN (a missing feature the codec let through under
        ``missing=impute``), e.g. the source means; ``None`` leaves NaN alone.

    >>> embed = Embedder(MLPBackbone(3, [4], 2), np.zeros(3), np.ones(3))
    >>> X = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    >>> bool((embed(X)[2:3] == embed(X[2:3])).all())  # the same row, alone or in a batch
    True
    """

    def __init__(
        self,
        backbone: nn.Module,
        mean: np.ndarray,
        std: np.ndarray,
        device: str = "cpu",
        exact: bool | None = None,
        half: bool = False,
        input_shape: Sequence[int] | None = None,
        impute: np.ndarray | None = None,
    ) -> None:
        self.device = torch.device(device)
        on_cpu = self.device.type == "cpu"
        if half and on_cpu:
            raise ValueError("half precision needs a CUDA device")
        self.exact = on_cpu if exact is None else exact
        self.dtype = torch.float16 if half else torch.float64 if self.exact else torch.float32
        self.input_shape = tuple(input_shape) if input_shape else None
        self.impute = None if impute is None else np.asarray(impute, np.float32)
        backbone = copy_backbone(backbone)
        self.backbone = backbone.eval().requires_grad_(False).to(self.device, self.dtype)
        self._mean = torch.as_tensor(mean, dtype=self.dtype, device=self.device)
        self._inv_std = 1.0 / torch.as_tensor(std, dtype=self.dtype, device=self.device)
        self._pinned: torch.Tensor | None = None  # reused host staging buffer (CUDA)
        # a plain Linear/ReLU stack in float64 on the CPU runs in numpy, with the same math
        exact_cpu = on_cpu and self.dtype == torch.float64 and self.input_shape is None
        self._layers = numpy_layers(self.backbone) if exact_cpu else None
        self._shift = np.asarray(mean, np.float64)
        self._scale = 1.0 / np.asarray(std, np.float64)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        """Embeddings ``(n, embedding_dim)`` float32 for features ``X`` ``(n, input_dim)``."""
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.impute is not None:
            X = impute_missing(X, self.impute)
        if self._layers is not None:
            standardized = (X.astype(np.float64) - self._shift) * self._scale
            return numpy_forward(self._layers, standardized).astype(np.float32)
        with torch.inference_mode():
            x = torch.from_numpy(X)
            if self.device.type != "cpu":
                x = self._to_device(x)
            x = (x.to(self.dtype) - self._mean) * self._inv_std
            if self.input_shape is not None:
                x = x.reshape(x.shape[0], *self.input_shape)
            z = self.backbone(x)
            return z.to(torch.float32).cpu().numpy()

    def _to_device(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.shape[0]
        if self._pinned is None or self._pinned.shape[0] < rows:
            self._pinned = torch.empty((max(rows, 1024), x.shape[1]), pin_memory=True)
        staged = self._pinned[:rows]
        staged.copy_(x)
        # asynchronous; the .cpu() of the result synchronizes before the buffer is reused
        return staged.to(self.device, non_blocking=True)


def plain_layers(net: nn.Module) -> list[nn.Module] | None:
    """``net``'s layers in order when it is nested ``nn.Sequential`` of ``Linear`` and ``ReLU``
    only (``Identity`` adds none), else None.

    >>> [type(m).__name__ for m in plain_layers(MLPBackbone(3, [4], 2).layers)]
    ['Linear', 'ReLU', 'Linear', 'ReLU']
    >>> plain_layers(nn.Identity()), plain_layers(MLPBackbone(3, [4], 2))  # its own forward
    ([], None)
    """
    layers: list[nn.Module] = []
    for module in net.modules():
        if type(module) in (nn.Sequential, nn.Identity):
            continue
        if type(module) not in (nn.Linear, nn.ReLU) or getattr(module, "inplace", False):
            return None
        layers.append(module)
    return layers


def numpy_layers(net: nn.Module) -> list[tuple[np.ndarray, np.ndarray] | None] | None:
    """Numpy views of ``(weight, bias)`` of each Linear, None for each ReLU, when ``net`` is
    only those (see :func:`plain_layers`) on the CPU; views, so they follow the weights as
    they learn."""
    layers = plain_layers(net)
    if layers is None or any(p.device.type != "cpu" for p in net.parameters()):
        return None
    return [
        (m.weight.detach().numpy(), m.bias.detach().numpy()) if isinstance(m, nn.Linear) else None
        for m in layers
    ]


def numpy_forward(layers: list[tuple[np.ndarray, np.ndarray] | None], X: np.ndarray) -> np.ndarray:
    """``X`` (float64) through :func:`numpy_layers`: on small batches a torch op's dispatch
    costs more than its arithmetic."""
    h = X
    for layer in layers:
        h = np.maximum(h, 0.0) if layer is None else h @ layer[0].T + layer[1]
    return h


def impute_missing(X: np.ndarray, values: np.ndarray) -> np.ndarray:
    """``X`` with each NaN replaced by its column's entry of ``values`` (a copy if any).

    >>> impute_missing(np.array([[1.0, np.nan]], np.float32), np.array([0.0, 5.0], np.float32))
    array([[1., 5.]], dtype=float32)
    """
    missing = np.isnan(X)
    if not missing.any():
        return X
    return np.where(missing, values, X).astype(X.dtype, copy=False)
