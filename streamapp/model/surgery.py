"""Backbone surgery: cut a torch backbone into a frozen lower part and trainable top layers.

The lower part runs once per served batch and its output, the *activations at the cut*, is
what the ledger keeps; the top part is what :class:`~streamapp.model.finetune.FinetuneHead`
trains.
"""

from __future__ import annotations

import logging
from typing import Literal

import torch
from torch import nn

from streamapp.model.backbone import copy_backbone

__all__ = ["AUTO_WEIGHTS", "Layers", "auto_layers", "cut_width", "split_backbone"]

logger = logging.getLogger(__name__)

Layers = int | Literal["all", "auto"]

AUTO_WEIGHTS = 65_536
"""The most weights ``layers="auto"`` trains online: all of a small backbone (the demo's has
6,144), the head only of a large one, whose every optimizer step would otherwise cost many
forward passes (a 4096-wide layer has 1M to 16M)."""


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


def auto_layers(backbone: nn.Module, budget: int = AUTO_WEIGHTS) -> int | Literal["all"]:
    """The top layers ``layers="auto"`` trains: as many as fit ``budget`` weights together
    (``"all"`` when every one does; 0, the head only, when not even the top one does).

    >>> from streamapp.model.backbone import MLPBackbone
    >>> auto_layers(MLPBackbone(64, [64], 32))
    'all'
    >>> auto_layers(MLPBackbone(64, [4096, 4096], 256)), auto_layers(MLPBackbone(64, [512], 64))
    (0, 1)
    """
    sequence = _sequence(backbone)
    blocks = [backbone] if sequence is None else list(sequence.children())
    sizes = [sum(p.numel() for p in block.parameters()) for block in blocks]
    sizes = [size for size in sizes if size]
    fit, total = 0, 0
    for size in reversed(sizes):
        total += size
        if total > budget:
            break
        fit += 1
    return "all" if fit == len(sizes) else fit


def cut_width(lower: nn.Module, input_dim: int) -> int:
    """Width of the activations at the cut (what the ledger stores per pending row)."""
    with torch.inference_mode():
        return int(lower(torch.zeros(1, input_dim)).shape[1])
