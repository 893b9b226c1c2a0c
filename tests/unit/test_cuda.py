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
