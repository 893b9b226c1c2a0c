"""Training a regression source model: a backbone, a ridge head, the source metrics and the
reference profile of a ``task="regression"`` bundle.

The backbone (the same MLP/CNN family as the classifiers') is trained jointly with a linear
output on the standardized target under a squared loss, so its embeddings carry what predicts
the target; the bundle's head is then ridge regression on those embeddings, in target units
(the closed form the online regression head anchors on; it fits the training share at least as
well as the joint output un-standardized). The reference profile bins the source model's
predicted values on the training share (:meth:`ReferenceProfile.from_regression`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from streamapp.drift.stats import ReferenceProfile
from streamapp.errors import DataError
from streamapp.model.backbone import Embedder
from streamapp.model.bundle import Manifest, check_new_bundle, write_bundle

__all__ = [
    "RIDGE_L2",
    "fit_ridge_head",
    "regression_metrics",
    "train_regression_backbone",
    "train_regression_bundle",
]

logger = logging.getLogger(__name__)

RIDGE_L2 = 1e-4  # per label: the penalty grows with the data, as in regression.scenario.ridge


def regression_metrics(prefix: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE and R² of ``pred`` (NaN when there is nothing to measure; R² is NaN for a
    constant ``y``).

    >>> regression_metrics("source", np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0, 4.0]))
    {'source_mae': 0.3333333333333333, 'source_rmse': 0.5773502691896257, 'source_r2': 0.5}
    """
    y, pred = np.asarray(y, np.float64), np.asarray(pred, np.float64)
    if len(y) == 0:
        nan = float("nan")
        return {f"{prefix}_mae": nan, f"{prefix}_rmse": nan, f"{prefix}_r2": nan}
    error = pred - y
    total = float(((y - y.mean()) ** 2).sum())
    return {
        f"{prefix}_mae": float(np.abs(error).mean()),
        f"{prefix}_rmse": math.sqrt(float((error**2).mean())),
        f"{prefix}_r2": 1.0 - float((error**2).sum()) / total if total > 0 else float("nan"),
    }


def fit_ridge_head(
    Z: np.ndarray, y: np.ndarray, l2: float = RIDGE_L2
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression of ``y`` on the embeddings ``Z``: ``coef`` (1, k), ``intercept`` (1,).

    >>> Z = np.random.default_rng(0).normal(size=(200, 2))
    >>> coef, intercept = fit_ridge_head(Z, Z @ [2.0, -1.0] + 0.5, l2=1e-8)
    >>> coef.shape, intercept.shape, coef.round(3).tolist(), intercept.round(3).tolist()
    ((1, 2), (1,), [[2.0, -1.0]], [0.5])
    """
    from streamapp.regression.scenario import ridge

    coef, intercept = ridge(np.asarray(Z, np.float64), np.asarray(y, np.float64), l2=l2)
    return coef.reshape(1, -1), np.array([intercept], np.float64)


def train_regression_backbone(
    X: np.ndarray,
    y: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    hidden: Sequence[int] = (64,),
    embedding_dim: int = 32,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 3e-3,
    seed: int = 0,
    input_shape: Sequence[int] | None = None,
) -> nn.Module:
    """A backbone trained with a linear output on the standardized target (MSE); returns the
    backbone alone, in eval mode. Uses a local RNG: the global seed is untouched."""
    from streamapp.model.training import _backbone

    y = np.asarray(y, np.float64)
    y_mean, y_std = float(y.mean()), float(y.std()) or 1.0
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = _backbone(X.shape[1], hidden, embedding_dim, input_shape)
        output = nn.Linear(embedding_dim, 1)
        xs = torch.from_numpy(((X - mean) / std).astype(np.float32))
        if input_shape:
            xs = xs.reshape(len(xs), *input_shape)
        targets = torch.from_numpy(((y - y_mean) / y_std).astype(np.float32).reshape(-1, 1))
        optimizer = torch.optim.Adam([*backbone.parameters(), *output.parameters()], lr=lr)
        loss_fn = nn.MSELoss()
        for _ in range(epochs):
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), batch_size):
                idx = order[start : start + batch_size]
                optimizer.zero_grad()
                loss_fn(output(backbone(xs[idx])), targets[idx]).backward()
                optimizer.step()
    return backbone.eval()


def train_regression_bundle(
    X: np.ndarray,
    y: np.ndarray,
    out: Path,
    *,
    name: str,
    version: str,
    feature_names: list[str],
    options: dict[str, Any],
    seed: int,
    holdout: float,
) -> Manifest:
    """Train on ``(X, y)`` (``y`` the numeric targets) and write a regression bundle to
    ``out``. ``options``: ``hidden``, ``embedding_dim``, ``epochs``, ``standardize`` and
    ``input_shape``. A ``holdout`` share measures the ``source_*`` metrics."""
    from streamapp.model.training import _architecture, holdout_split, source_scale

    check_new_bundle(out)  # before the training, not after it
    y = np.asarray(y, np.float64)
    if y.ndim != 1 or len(y) != len(X):
        raise DataError(f"{len(X)} rows but targets of shape {y.shape}")
    if not np.isfinite(y).all():
        raise DataError("the targets hold missing or non-finite values")
    train, test = holdout_split(len(X), holdout, seed)
    if len(train) < 2:
        raise DataError(f"{len(train)} training rows; a regression model needs at least 2")
    shape = options.get("input_shape")
    standardize = options.get("standardize", True)
    started = time.perf_counter()
    mean, std = (
        source_scale(X[train]) if standardize else (np.zeros(X.shape[1]), np.ones(X.shape[1]))
    )
    backbone = train_regression_backbone(
        X[train],
        y[train],
        mean,
        std,
        hidden=options["hidden"],
        embedding_dim=options["embedding_dim"],
        epochs=options["epochs"],
        seed=seed,
        input_shape=shape,
    )
    embed = Embedder(backbone, mean, std, input_shape=shape)  # exactly as the worker embeds
    Z = embed(np.asarray(X, np.float32))
    coef, intercept = fit_ridge_head(Z[train], y[train])
    predicted = Z @ coef[0] + intercept[0]
    metrics = {
        **regression_metrics("train", y[train], predicted[train]),
        **regression_metrics("source", y[test], predicted[test]),
        "train_size": float(len(train)),
        "test_size": float(len(test)),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    reference = ReferenceProfile.from_regression(X[train], predicted[train])
    manifest = Manifest(
        name=name,
        version=version,
        classes=[],
        feature_names=feature_names,
        input_dim=X.shape[1],
        embedding_dim=int(coef.shape[1]),
        architecture=_architecture(options["hidden"], shape),
        preprocessing={"mean": mean.tolist(), "std": std.tolist()},
        source_metrics=metrics,
        created_ts=time.time(),
        input_shape=list(shape) if shape else None,
        task="regression",
    )
    logger.info("regression source model: %s", metrics)
    return write_bundle(out, manifest, backbone, coef, intercept, reference)
