"""Training the source model: a backbone and a one-vs-rest logistic head, jointly.

The head is trained with per-class sigmoid (one-vs-rest) cross-entropy, which is exactly
the model ``SGDClassifier(loss="log_loss")`` continues to train online, so the transferred
weights mean the same thing before and after deployment.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from streamapp.drift.stats import ReferenceProfile
from streamapp.model.backbone import MLPBackbone
from streamapp.model.bundle import Manifest, write_bundle
from streamapp.scenarios import Scenario

__all__ = ["train_source", "train_source_bundle"]

logger = logging.getLogger(__name__)


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
) -> tuple[MLPBackbone, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Train on standardized ``X``; returns ``(backbone, coef, intercept, mean, std)``.

    ``std_floor`` keeps a near-constant source feature from turning a small target shift
    into a huge z-score; ``augment_noise`` (Gaussian, in feature units) makes the backbone
    less brittle. Uses a local RNG (``torch.random.fork_rng``): the global seed is untouched.
    """
    mean = X.mean(axis=0)
    std = np.maximum(X.std(axis=0), std_floor)
    outputs = 1 if n_classes == 2 else n_classes
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        backbone = MLPBackbone(X.shape[1], list(hidden), embedding_dim)
        head = nn.Linear(embedding_dim, outputs)
        xs = torch.from_numpy(((X - mean) / std).astype(np.float32))
        targets = torch.from_numpy(
            y.reshape(-1, 1).astype(np.float32)
            if outputs == 1
            else np.eye(n_classes, dtype=np.float32)[y]
        )
        noise_scale = (augment_noise / std).astype(np.float32)  # noise in standardized units
        optimizer = torch.optim.Adam([*backbone.parameters(), *head.parameters()], lr=lr)
        loss_fn = nn.BCEWithLogitsLoss()
        for _ in range(epochs):
            order = torch.randperm(len(xs))
            for start in range(0, len(xs), batch_size):
                idx = order[start : start + batch_size]
                batch = xs[idx]
                if augment_noise > 0:
                    batch = batch + torch.randn_like(batch) * torch.from_numpy(noise_scale)
                optimizer.zero_grad()
                loss_fn(head(backbone(batch)), targets[idx]).backward()
                optimizer.step()
    backbone.eval()
    coef = head.weight.detach().numpy().astype(np.float64)
    intercept = head.bias.detach().numpy().astype(np.float64)
    return backbone, coef, intercept, mean, std


def _predict(
    backbone: MLPBackbone,
    coef: np.ndarray,
    intercept: np.ndarray,
    X: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
) -> np.ndarray:
    with torch.inference_mode():
        z = backbone(torch.from_numpy(((X - mean) / std).astype(np.float32))).numpy()
    scores = z @ coef.T + intercept
    return (scores[:, 0] > 0).astype(np.int64) if coef.shape[0] == 1 else scores.argmax(axis=1)


def train_source_bundle(
    scenario: Scenario,
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
    """Train on ``scenario``'s source data and write a bundle to ``out``.

    A ``holdout`` share of the source data measures the source metrics; the reference
    profile is built from the training share.
    """
    X, y = scenario.source_data()
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(X))
    n_test = int(len(X) * holdout)
    test, train = order[:n_test], order[n_test:]
    n_classes = len(scenario.classes)
    started = time.perf_counter()
    backbone, coef, intercept, mean, std = train_source(
        X[train],
        y[train],
        n_classes,
        hidden=hidden,
        embedding_dim=embedding_dim,
        epochs=epochs,
        seed=seed,
    )
    train_pred = _predict(backbone, coef, intercept, X[train], mean, std)
    test_pred = _predict(backbone, coef, intercept, X[test], mean, std)
    metrics = {
        "train_accuracy": float((train_pred == y[train]).mean()),
        "test_accuracy": float((test_pred == y[test]).mean()),
        "train_size": float(len(train)),
        "test_size": float(len(test)),
        "train_seconds": round(time.perf_counter() - started, 3),
    }
    reference = ReferenceProfile.from_data(X[train], train_pred, n_classes)
    manifest = Manifest(
        name=name or scenario.name,
        version=version,
        classes=list(scenario.classes),
        feature_names=list(scenario.feature_names),
        input_dim=X.shape[1],
        embedding_dim=int(coef.shape[1]),
        architecture={"name": "mlp", "hidden": list(hidden)},
        preprocessing={"mean": mean.tolist(), "std": std.tolist()},
        source_metrics=metrics,
        created_ts=time.time(),
    )
    logger.info("source model: %s", metrics)
    return write_bundle(out, manifest, backbone, coef, intercept, reference)
