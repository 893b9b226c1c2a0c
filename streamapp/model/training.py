"""Training the source model: a backbone and a one-vs-rest logistic head, jointly.

The head is trained with per-class sigmoid (one-vs-rest) cross-entropy, which is exactly
the model ``SGDClassifier(loss="log_loss")`` continues to train online, so the transferred
weights mean the same thing before and after deployment. A source or table with numeric
targets (``task == "regression"``) is trained by :mod:`streamapp.model.regression_training`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import torch
from torch import nn

from streamapp.drift.stats import ReferenceProfile
from streamapp.model.backbone import CNNBackbone, MLPBackbone
from streamapp.model.bundle import Manifest, check_new_bundle, write_bundle
from streamapp.model.logits import logit_rows, predicted_classes

if TYPE_CHECKING:
    from streamapp.datasets import Table

__all__ = [
    "SourceData",
    "classification_metrics",
    "source_scale",
    "train_source",
    "train_source_bundle",
    "train_table_bundle",
    "holdout_split",
]

logger = logging.getLogger(__name__)


class SourceData(Protocol):
    """A named, labeled source dataset: what :func:`train_source_bundle` trains on."""

    @property
    def name(self) -> str:
        """The model's name unless one is given."""
        ...

    @property
    def classes(self) -> Sequence[str]:
        """The class names; ``y`` holds indices into them."""
        ...

    @property
    def feature_names(self) -> Sequence[str]:
        """The names of the columns of ``X``."""
        ...

    def source_data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` to train on; ``y`` holds class indices (a regression source, one with
        ``task = "regression"`` and no classes: the numeric targets)."""
        ...


def train_source(
    X: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    *,
    hidden: Sequence[int] = (64,),
    embedding_dim: int = 32,
    epochs: int = 40,
    batch_size: int = 64,
    lr: float = 3e-3,
    std_floor: float = 1.0,
    augment_noise: float = 1.0,
    seed: int = 0,
    standardize: bool = True,
    input_shape: Sequence[int] | None = None,
) -> tuple[nn.Module, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train on standardized ``X``; returns ``(backbone, coef, intercept, mean, std)``.

    ``std_floor`` keeps a near-constant source feature from turning a small target shift
    into a huge z-score; ``augment_noise`` (Gaussian, in feature units) makes the backbone
    less brittle. Uses a local RNG (``torch.random.fork_rng``): the global seed is untouched.
    With a 3-d ``input_shape`` ``(C, H, W)`` the backbone is the small CNN (``hidden`` are its
    channels); else the MLP.
    """
    mean, std = source_scale(X, std_floor) if standardize else _identity_scale(X)
    outputs = logit_rows(n_classes)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = _backbone(X.shape[1], hidden, embedding_dim, input_shape)
        head = nn.Linear(embedding_dim, outputs)
        xs = torch.from_numpy(((X - mean) / std).astype(np.float32))
        if input_shape:
            xs = xs.reshape(len(xs), *input_shape)
        targets = torch.from_numpy(
            y.reshape(-1, 1).astype(np.float32)
            if outputs == 1
            else np.eye(n_classes, dtype=np.float32)[y]
        )
        # noise in standardized units (a scalar for shaped inputs: std is per flat feature)
        noise = augment_noise / std
        noise_scale = noise.astype(np.float32) if not input_shape else np.float32(noise.mean())
        optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        for _ in range(epochs):
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), batch_size):
                idx = order[start : start + batch_size]
                batch = xs[idx]
                if augment_noise > 0:
                    batch = batch + torch.randn_like(batch) * torch.as_tensor(noise_scale)
                optimizer.zero_grad()
                loss_fn(head(backbone(batch)), targets[idx]).backward()
                optimizer.step()
    backbone.eval()
    coef = head.weight.detach().numpy().astype(np.float64)
    intercept = head.bias.detach().numpy().astype(np.float64)
    return backbone, coef, intercept, mean, std


def source_scale(X: np.ndarray, std_floor: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Per-feature mean and std (at least ``std_floor``; a constant feature gets 1).

    >>> source_scale(np.array([[1.0, 5.0], [3.0, 5.0]]))
    (array([2., 5.]), array([1., 1.]))
    """
    std = X.std(axis=0)
    std = np.where(std > 1e-12, std, 1.0)
    return X.mean(axis=0), np.maximum(std, std_floor)


def _identity_scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(X.shape[1]), np.ones(X.shape[1])


def _backbone(
    input_dim: int,
    hidden: Sequence[int],
    embedding_dim: int,
    input_shape: Sequence[int] | None,
) -> nn.Module:
    if input_shape is not None and len(input_shape) == 3:
        return CNNBackbone(input_dim, embedding_dim, list(input_shape), list(hidden))
    return MLPBackbone(input_dim, list(hidden), embedding_dim)


def _architecture(hidden: Sequence[int], input_shape: Sequence[int] | None) -> dict[str, Any]:
    if input_shape is not None and len(input_shape) == 3:
        return {"name": "cnn", "channels": list(hidden)}
    return {"name": "mlp", "hidden": list(hidden)}


def _predict(
    backbone: nn.Module,
    coef: np.ndarray,
    intercept: np.ndarray,
    X: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    input_shape: Sequence[int] | None = None,
) -> np.ndarray:
    with torch.inference_mode():
        x = torch.from_numpy(((X - mean) / std).astype(np.float32))
        if input_shape:
            x = x.reshape(len(x), *input_shape)
        z = backbone(x).numpy()
    scores = z @ coef.T + intercept
    return predicted_classes(scores)


def classification_metrics(prefix: str, y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Accuracy and macro-F1 of ``pred``.

    >>> classification_metrics("test", np.array([0, 1, 1]), np.array([0, 1, 0]))
    {'test_accuracy': 0.6666666666666666, 'test_macro_f1': 0.6666666666666666}
    """
    from sklearn.metrics import f1_score

    return {
        f"{prefix}_accuracy": float((pred == y).mean()) if len(y) else float("nan"),
        f"{prefix}_macro_f1": float(f1_score(y, pred, average="macro", zero_division=0))
        if len(y)
        else float("nan"),
    }


def holdout_split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``(train, test)`` row indices: a seeded shuffle, ``fraction`` held out."""
    order = np.random.default_rng(seed).permutation(n)
    n_test = int(n * fraction)
    return order[n_test:], order[:n_test]


def train_source_bundle(
    source: SourceData,
    out: Path,
    *,
    name: str | None = None,
    version: str = "1",
    hidden: Sequence[int] = (64,),
    embedding_dim: int = 32,
    epochs: int = 40,
    seed: int = 0,
    holdout: float = 0.2,
) -> Manifest:
    """Train on ``source``'s data and write a bundle to ``out``.

    A ``holdout`` share of the source data measures the source metrics; the reference
    profile is built from the training share. A regression source (``task = "regression"``)
    is trained on standardized features without a floor or noise (its features are not
    pixel intensities), as a user's table is.
    """
    X, y = source.source_data()
    if getattr(source, "task", "classification") == "regression":
        from streamapp.model.regression_training import train_regression_bundle

        return train_regression_bundle(
            X,
            y,
            out,
            name=name or source.name,
            version=version,
            feature_names=list(source.feature_names),
            options={"hidden": hidden, "embedding_dim": embedding_dim, "epochs": epochs},
            seed=seed,
            holdout=holdout,
        )
    return _train_bundle(
        X,
        y,
        out,
        name=name or source.name,
        version=version,
        classes=list(source.classes),
        feature_names=list(source.feature_names),
        options={"hidden": hidden, "embedding_dim": embedding_dim, "epochs": epochs},
        seed=seed,
        holdout=holdout,
    )


def train_table_bundle(
    table: Table,
    out: Path,
    *,
    name: str,
    version: str = "1",
    hidden: Sequence[int] = (64,),
    embedding_dim: int = 32,
    epochs: int = 40,
    seed: int = 0,
    holdout: float = 0.2,
    standardize: bool = True,
) -> Manifest:
    """Train on a user's data file (:func:`streamapp.datasets.load_table`) and write a bundle.

    Unlike the built-in sources (pixel intensities), a user's features have any scale: the
    standardization has no floor and there is no noise augmentation. A table with numeric
    targets (``table.task == "regression"``) becomes a regression bundle.
    """
    check_new_bundle(out)
    table.require_complete()
    if table.task == "regression":
        from streamapp.model.regression_training import train_regression_bundle

        return train_regression_bundle(
            table.X,
            table.y,
            out,
            name=name,
            version=version,
            feature_names=table.feature_names,
            options={
                "hidden": hidden,
                "embedding_dim": embedding_dim,
                "epochs": epochs,
                "standardize": standardize,
                "input_shape": table.input_shape,
            },
            seed=seed,
            holdout=holdout,
        )
    table.require_classes()
    return _train_bundle(
        table.X,
        table.y,
        out,
        name=name,
        version=version,
        classes=table.classes,
        feature_names=table.feature_names,
        options={
            "hidden": hidden,
            "embedding_dim": embedding_dim,
            "epochs": epochs,
            "std_floor": 0.0,
            "augment_noise": 0.0,
            "standardize": standardize,
            "input_shape": table.input_shape,
        },
        seed=seed,
        holdout=holdout,
    )


def _train_bundle(
    X: np.ndarray,
    y: np.ndarray,
    out: Path,
    *,
    name: str,
    version: str,
    classes: list[str],
    feature_names: list[str],
    options: dict[str, Any],
    seed: int,
    holdout: float,
) -> Manifest:
    check_new_bundle(out)  # before the training, not after it
    train, test = holdout_split(len(X), holdout, seed)
    n_classes = len(classes)
    shape = options.get("input_shape")
    started = time.perf_counter()
    backbone, coef, intercept, mean, std = train_source(
        X[train], y[train], n_classes, seed=seed, **options
    )
    train_pred = _predict(backbone, coef, intercept, X[train], mean, std, shape)
    test_pred = _predict(backbone, coef, intercept, X[test], mean, std, shape)
    metrics = {
        **classification_metrics("train", y[train], train_pred),
        **classification_metrics("test", y[test], test_pred),
        "train_size": float(len(train)),
        "test_size": float(len(test)),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    reference = ReferenceProfile.from_data(X[train], train_pred, n_classes)
    manifest = Manifest(
        name=name,
        version=version,
        classes=classes,
        feature_names=feature_names,
        input_dim=X.shape[1],
        embedding_dim=int(coef.shape[1]),
        architecture=_architecture(options["hidden"], shape),
        preprocessing={"mean": mean.tolist(), "std": std.tolist()},
        source_metrics=metrics,
        created_ts=time.time(),
        input_shape=list(shape) if shape else None,
    )
    logger.info("source model: %s", metrics)
    return write_bundle(out, manifest, backbone, coef, intercept, reference)
