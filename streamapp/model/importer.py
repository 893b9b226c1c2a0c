"""``streamapp models import``: a user's pretrained feature extractor plus labeled source data
in, a bundle out (the same files, checks and source metrics as ``train-source`` writes).

The backbone is a torch.export program (``.pt2``), an ONNX model (``.onnx``) or a safetensors
state_dict of a built-in architecture (``.safetensors``); see :mod:`streamapp.model.formats`.
The source head is given (``head.npz`` or a skops file of a fitted scikit-learn linear
classifier) or fitted here: one-vs-rest logistic regression on the training share's
embeddings, the model the online head keeps training. A table with numeric targets
(``task="regression"``) makes a regression bundle: its head is a ``head.npz`` with ``coef``
(1, k) or ridge regression on the training share's embeddings.
"""

from __future__ import annotations

import logging
import time
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from streamapp.datasets import Table
from streamapp.drift.stats import ReferenceProfile
from streamapp.errors import BundleError, DataError
from streamapp.model.backbone import Embedder
from streamapp.model.bundle import Manifest, check_new_bundle, write_bundle
from streamapp.model.formats import (
    format_of,
    infer_architecture,
    load_backbone,
    load_safetensors,
)
from streamapp.model.logits import logit_rows, predicted_classes
from streamapp.model.training import classification_metrics, holdout_split, source_scale

__all__ = [
    "TRUSTED_SKOPS_TYPES",
    "fit_ovr_head",
    "import_bundle",
    "load_head",
    "load_regression_head",
]

logger = logging.getLogger(__name__)

# The only types a skops head may contain (numpy's own are trusted by skops itself).
TRUSTED_SKOPS_TYPES: tuple[str, ...] = (
    "sklearn.linear_model._logistic.LogisticRegression",
    "sklearn.linear_model._stochastic_gradient.SGDClassifier",
    "sklearn.linear_model._ridge.RidgeClassifier",
    "sklearn.linear_model._perceptron.Perceptron",
    "sklearn.linear_model._passive_aggressive.PassiveAggressiveClassifier",
    "sklearn.svm._classes.LinearSVC",
)


def import_bundle(
    backbone_path: Path,
    table: Table,
    out: Path,
    *,
    name: str,
    version: str = "1",
    input_shape: Sequence[int] | None = None,
    head_path: Path | None = None,
    standardize: bool = True,
    holdout: float = 0.2,
    seed: int = 0,
) -> Manifest:
    """Turn ``backbone_path`` and ``table`` into a bundle at ``out``.

    Standardization (``standardize``) uses the mean and population std of every row of the
    data: standardize the same way when training the network. A regression ``table``
    (numeric targets) makes a regression bundle.
    """
    check_new_bundle(out)
    backbone_path = Path(backbone_path)
    if not backbone_path.is_file():
        raise BundleError(f"no such backbone file: {backbone_path}")
    table.require_complete()
    regression = table.task == "regression"
    if not regression:
        table.require_classes()
    shape = _input_shape(table, input_shape)
    fmt = format_of(backbone_path)
    mean, std = source_scale(table.X) if standardize else _identity(table.X.shape[1])
    backbone, architecture, embedding_dim = _load(backbone_path, fmt, table, shape)
    Z = embed_all(backbone, table.X, mean, std, shape)
    if Z.shape[1] != embedding_dim and embedding_dim > 0:
        raise BundleError(f"the backbone gives {Z.shape[1]}-d embeddings, expected {embedding_dim}")
    train, test = holdout_split(len(table), holdout, seed)
    n_classes = len(table.classes)
    if regression:
        coef, intercept, metrics, reference = _regression_head(table, Z, train, test, head_path)
    else:
        if head_path is not None:
            coef, intercept = load_head(head_path, table.classes, Z.shape[1])
        else:
            coef, intercept = fit_ovr_head(Z[train], table.y[train], n_classes, seed)
        train_pred = _predict(Z[train], coef, intercept)
        test_pred = _predict(Z[test], coef, intercept)
        metrics = {
            **classification_metrics("train", table.y[train], train_pred),
            **classification_metrics("test", table.y[test], test_pred),
            "train_size": float(len(train)),
            "test_size": float(len(test)),
        }
        reference = ReferenceProfile.from_data(table.X[train], train_pred, n_classes)
    manifest = Manifest(
        name=name,
        version=version,
        classes=table.classes,
        feature_names=table.feature_names,
        input_dim=table.X.shape[1],
        embedding_dim=int(Z.shape[1]),
        architecture=architecture,
        preprocessing={"mean": mean.tolist(), "std": std.tolist()},
        source_metrics=metrics,
        created_ts=time.time(),
        input_shape=list(shape) if shape else None,
        backbone_format=fmt,
        task=table.task,
    )
    logger.info("imported %s backbone: %s", fmt, metrics)
    return write_bundle(out, manifest, backbone_path, coef, intercept, reference)


def _regression_head(
    table: Table, Z: np.ndarray, train: np.ndarray, test: np.ndarray, head_path: Path | None
) -> tuple[np.ndarray, np.ndarray, dict[str, float], ReferenceProfile]:
    """``(coef, intercept, metrics, reference)`` of a regression bundle: the given head or
    ridge on the training share's embeddings, MAE/RMSE/R² on both shares."""
    from streamapp.model.regression_training import fit_ridge_head, regression_metrics

    if len(train) < 2:
        raise DataError(f"{len(train)} training rows; a regression model needs at least 2")
    if head_path is None:
        coef, intercept = fit_ridge_head(Z[train], table.y[train])
    else:
        coef, intercept = load_regression_head(head_path, Z.shape[1])
    predicted = Z @ coef[0] + intercept[0]
    metrics = {
        **regression_metrics("train", table.y[train], predicted[train]),
        **regression_metrics("source", table.y[test], predicted[test]),
        "train_size": float(len(train)),
        "test_size": float(len(test)),
    }
    return (
        coef,
        intercept,
        metrics,
        ReferenceProfile.from_regression(table.X[train], predicted[train]),
    )


def load_regression_head(path: Path, k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coef (1, k), intercept (1,))`` from a ``head.npz``; a ``coef`` of shape ``(k,)`` is
    taken as the one row it is."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no such head file: {path}")
    if path.suffix.lower() == ".skops":
        raise BundleError(f"{path.name}: a regression head is a head.npz (coef, intercept)")
    coef, intercept = _npz_head(path)
    if coef.ndim == 1:
        coef = coef.reshape(1, -1)
    if coef.shape != (1, k) or intercept.shape != (1,):
        raise BundleError(
            f"{path.name}: head {coef.shape}/{intercept.shape}, expected coef (1, {k}) and "
            f"intercept (1,) for a regression bundle"
        )
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise BundleError(f"{path.name}: the head holds non-finite weights")
    return coef, intercept


def _identity(d: int) -> tuple[np.ndarray, np.ndarray]:
    return np.zeros(d), np.ones(d)


def _input_shape(table: Table, given: Sequence[int] | None) -> list[int] | None:
    shape = list(given) if given else table.input_shape
    if shape is not None and int(np.prod(shape)) != table.X.shape[1]:
        raise DataError(
            f"--input-shape {','.join(map(str, shape))} holds {int(np.prod(shape))} values, "
            f"the data has {table.X.shape[1]} features"
        )
    return shape


def _load(
    path: Path, fmt: str, table: Table, shape: list[int] | None
) -> tuple[nn.Module, dict[str, Any], int]:
    """``(module, architecture, embedding_dim or 0 when only a forward pass tells)``."""
    d = table.X.shape[1]
    if fmt == "safetensors":
        architecture, k = infer_architecture(load_safetensors(path), d, shape)
    else:
        architecture, k = {"name": fmt}, 0
    try:
        module = load_backbone(
            path, fmt, architecture, input_dim=d, embedding_dim=max(k, 1), input_shape=shape
        )
    except BundleError:
        raise
    except (RuntimeError, TypeError, ValueError) as exc:
        raise BundleError(f"{path.name} does not fit the data: {_brief(exc)}") from None
    return module, architecture, k


def embed_all(
    backbone: nn.Module,
    X: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    shape: Sequence[int] | None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Embeddings of every row, exactly as the worker computes them (the same
    :class:`Embedder`); checks batches of one and of several rows, as a stream has both."""
    embed = Embedder(backbone, mean, std, input_shape=shape)
    try:
        embed(X[:1])
        parts = [embed(X[i : i + batch_size]) for i in range(0, len(X), batch_size)]
    except Exception as exc:  # a user's graph can fail in many ways: say which, in one line
        shown = f"(n, {','.join(map(str, shape))})" if shape else f"(n, {X.shape[1]})"
        raise BundleError(
            f"the backbone fails on inputs of shape {shown}: {_brief(exc)} "
            f"(export it with a dynamic batch dimension; pass --input-shape for shaped inputs)"
        ) from None
    Z = np.concatenate(parts)
    if Z.ndim != 2 or len(Z) != len(X):
        raise BundleError(f"the backbone returns shape {Z.shape}, expected (n, k) embeddings")
    if not np.isfinite(Z).all():
        raise BundleError("the backbone returns non-finite embeddings on the data")
    return Z


def fit_ovr_head(
    Z: np.ndarray, y: np.ndarray, n_classes: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One-vs-rest logistic regression: ``coef`` (c, k), or (1, k) for two classes.

    >>> Z = np.array([[0.0], [1.0], [2.0], [3.0]]); y = np.array([0, 0, 1, 1])
    >>> coef, intercept = fit_ovr_head(Z, y, 2)
    >>> coef.shape, bool(coef[0, 0] > 0)
    ((1, 1), True)
    """
    from sklearn.linear_model import LogisticRegression

    targets = [y == 1] if n_classes == 2 else [y == c for c in range(n_classes)]
    coef, intercept = [], []
    for target in targets:
        if target.all() or not target.any():  # a class absent from the training share
            coef.append(np.zeros(Z.shape[1]))
            intercept.append(-10.0 if not target.any() else 10.0)
            continue
        model = LogisticRegression(max_iter=2000, random_state=seed).fit(Z, target)
        coef.append(model.coef_[0])
        intercept.append(float(model.intercept_[0]))
    return np.asarray(coef, np.float64), np.asarray(intercept, np.float64)


def load_head(path: Path, classes: list[str], k: int) -> tuple[np.ndarray, np.ndarray]:
    """``(coef, intercept)`` from ``head.npz`` (rows in the order of ``classes``) or from a
    skops file of a fitted scikit-learn linear classifier (rows matched by its ``classes_``)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"no such head file: {path}")
    if path.suffix.lower() == ".skops":
        coef, intercept = _skops_head(path, classes)
    else:
        coef, intercept = _npz_head(path)
    rows = logit_rows(len(classes))
    if coef.shape != (rows, k) or intercept.shape != (rows,):
        raise BundleError(
            f"{path.name}: head {coef.shape}/{intercept.shape}, expected coef ({rows}, {k}) "
            f"and intercept ({rows},) for classes {classes}"
        )
    if not (np.isfinite(coef).all() and np.isfinite(intercept).all()):
        raise BundleError(f"{path.name}: the head holds non-finite weights")
    return coef, intercept


def _npz_head(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            coef, intercept = archive["coef"], archive["intercept"]
    except KeyError as exc:
        raise BundleError(f"{path.name} lacks {exc} (expected coef and intercept)") from None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path.name} is not a plain numeric .npz: {_brief(exc)}") from None
    if not (np.issubdtype(coef.dtype, np.number) and np.issubdtype(intercept.dtype, np.number)):
        raise BundleError(f"{path.name}: coef and intercept must be numeric")
    return np.asarray(coef, np.float64), np.asarray(intercept, np.float64).reshape(-1)


def _skops_head(path: Path, classes: list[str]) -> tuple[np.ndarray, np.ndarray]:
    try:
        import skops.io as sio
    except ImportError:
        raise BundleError("a .skops head needs skops: pip install skops") from None
    try:
        untrusted = [t for t in sio.get_untrusted_types(file=path) if t not in TRUSTED_SKOPS_TYPES]
    except Exception as exc:  # skops raises zip/json errors for a file that is not skops
        raise BundleError(f"{path.name} is not a skops file: {_brief(exc)}") from None
    if untrusted:
        raise BundleError(
            f"{path.name} holds types outside the trusted list, refused to load it: "
            f"{', '.join(untrusted[:3])}"
        )
    model = sio.load(path, trusted=list(TRUSTED_SKOPS_TYPES))
    kind = f"{type(model).__module__}.{type(model).__qualname__}"
    if kind not in TRUSTED_SKOPS_TYPES:
        raise BundleError(
            f"{path.name} holds a {type(model).__name__}, not one of the trusted linear "
            f"classifiers ({', '.join(t.rsplit('.', 1)[1] for t in TRUSTED_SKOPS_TYPES)})"
        )
    try:
        coef = np.asarray(model.coef_, np.float64)
        intercept = np.asarray(model.intercept_, np.float64).reshape(-1)
        model_classes = [str(c) for c in model.classes_]
    except AttributeError:
        raise BundleError(f"{path.name}: not a fitted linear classifier") from None
    if sorted(model_classes) != sorted(classes):
        raise BundleError(f"{path.name}: classes {model_classes} differ from the data's {classes}")
    if len(classes) == 2:  # one row, positive for model.classes_[1]
        sign = 1.0 if model_classes[1] == classes[1] else -1.0
        return sign * coef, sign * intercept
    order = [model_classes.index(c) for c in classes]
    return coef[order], intercept[order]


def _predict(Z: np.ndarray, coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    scores = Z @ coef.T + intercept
    return predicted_classes(scores)


def _brief(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 200 else text[:200] + "..."
