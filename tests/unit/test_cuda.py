"""The CUDA path; skipped where no GPU is present (CI never has one)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from streamapp.model.backbone import Embedder
from streamapp.model.bundle import load_bundle

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_gpu_embeddings_match_cpu(digits_bundle: Path) -> None:
    bundle = load_bundle(digits_bundle)
    pre = bundle.manifest.preprocessing
    mean, std = np.asarray(pre["mean"]), np.asarray(pre["std"])
    X = np.random.default_rng(0).uniform(0, 16, size=(257, 64)).astype(np.float32)
    cpu = Embedder(bundle.backbone, mean, std, device="cpu")(X)
    gpu = Embedder(load_bundle(digits_bundle).backbone, mean, std, device="cuda")(X)
    np.testing.assert_allclose(gpu, cpu, rtol=1e-4, atol=1e-5)


def test_half_precision_and_the_pinned_buffer_across_batch_sizes(digits_bundle: Path) -> None:
    bundle = load_bundle(digits_bundle)
    pre = bundle.manifest.preprocessing
    mean, std = np.asarray(pre["mean"]), np.asarray(pre["std"])
    cpu = Embedder(bundle.backbone, mean, std, device="cpu")
    half = Embedder(bundle.backbone, mean, std, device="cuda", half=True)
    rng = np.random.default_rng(1)
    for rows in (1, 700, 3000, 5):  # the staging buffer grows, then is reused
        X = rng.uniform(0, 16, size=(rows, 64)).astype(np.float32)
        np.testing.assert_allclose(half(X), cpu(X), rtol=2e-2, atol=2e-2)


def test_the_worker_pipeline_scores_on_the_gpu(digits_bundle: Path) -> None:
    from streamapp.model.variants import make_embedder

    bundle = load_bundle(digits_bundle)
    embed = make_embedder(bundle, "torch", device="cuda")
    assert embed(np.zeros((3, 64), np.float32)).shape == (3, bundle.manifest.embedding_dim)
