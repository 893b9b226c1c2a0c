"""Backbone variants in process: embedding throughput and what they do to accuracy.

Accuracy is measured twice per variant on the digits-shift scenario: the frozen source model
on the source data, and the prequential accuracy of the online head (predict, then learn in
batches of 100) on 6,000 target events, as the worker would adapt it.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamapp.bench.common import SCENARIO
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.head import SGDHead
from streamapp.model.variants import VARIANTS, Variant, export_onnx, make_embedder
from streamapp.scenarios import get_scenario

__all__ = ["bundle_with_onnx", "measure_variants"]

logger = logging.getLogger(__name__)


def bundle_with_onnx(bundle_path: Path, workdir: Path) -> Path:
    """A copy of the bundle with ``backbone.onnx`` exported into it."""
    copy = workdir / "bundle-onnx"
    if not copy.exists():
        shutil.copytree(bundle_path, copy)
        export_onnx(copy)
    return copy


def _rows_per_second(embed: Any, X: np.ndarray, batch: int, seconds: float = 1.0) -> float:
    embed(X[:batch])  # warm up
    rows, started = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - started) < seconds:
        start = rows % (len(X) - batch + 1)
        embed(X[start : start + batch])
        rows += batch
    return rows / elapsed


def _prequential_accuracy(bundle: Bundle, embed: Any, X: np.ndarray, y: np.ndarray) -> float:
    head = SGDHead(bundle.head_coef, bundle.head_intercept, bundle.manifest.classes)
    correct = 0
    for start in range(0, len(y), 100):
        Z = embed(X[start : start + 100])
        correct += int((head.predict_proba_many(Z).argmax(axis=1) == y[start : start + 100]).sum())
        head.learn_many(Z, y[start : start + 100])
    return correct / len(y)


def measure_variants(bundle_path: Path, batch: int = 500) -> dict[str, Any]:
    scenario = get_scenario(SCENARIO)
    Xs, ys = scenario.source_data()
    Xt, yt, _ = scenario.target_data(6000)
    Xs, Xt = Xs.astype(np.float32), Xt.astype(np.float32)
    rows: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="streamapp-variants-") as workdir:
        onnx_path = bundle_with_onnx(Path(bundle_path), Path(workdir))
        for variant in VARIANTS:
            bundle = load_bundle(onnx_path if variant == "onnx" else bundle_path)
            embed = make_embedder(bundle, variant)
            source_pred = (embed(Xs) @ bundle.head_coef.T + bundle.head_intercept).argmax(axis=1)
            rows[variant] = {
                "embeddings_per_s": round(_rows_per_second(embed, Xt, batch)),
                "source_accuracy": round(float((source_pred == ys).mean()), 4),
                "target_prequential_accuracy": round(
                    _prequential_accuracy(bundle, embed, Xt, yt), 4
                ),
            }
            logger.info("variant %s: %s", variant, rows[variant])
    base = rows["torch"]
    for values in rows.values():
        values["speedup_vs_torch"] = round(values["embeddings_per_s"] / base["embeddings_per_s"], 2)
        for key in ("source_accuracy", "target_prequential_accuracy"):
            values[f"{key}_change"] = round(values[key] - base[key], 4)
    return {"batch": batch, "variants": rows, "cuda": measure_cuda(bundle_path)}


def measure_cuda(bundle_path: Path) -> dict[str, Any] | None:
    """Backbone throughput against batch size on the GPU (float32 and float16), with the
    host-to-device copy and the copy back included; None without a CUDA device."""
    if not torch.cuda.is_available():
        return None
    bundle = load_bundle(bundle_path)
    X = np.random.default_rng(0).uniform(0, 16, (65_536, bundle.manifest.input_dim))
    X = X.astype(np.float32)
    result: dict[str, Any] = {"device": torch.cuda.get_device_name(0)}
    variant: Variant = "torch"
    for half in (False, True):
        embed = make_embedder(bundle, variant, device="cuda", half=half)
        result["float16" if half else "float32"] = {
            str(b): round(_rows_per_second(embed, X, b, seconds=0.5))
            for b in (1, 64, 512, 4096, 32_768)
        }
    return result
