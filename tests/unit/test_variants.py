"""Backbone variants: int8 quantization and ONNX export agree with the torch backbone."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from streamapp.errors import BundleError, ConfigError
from streamapp.model.bundle import load_bundle
from streamapp.model.variants import ONNX_FILE, export_onnx, make_embedder
from streamapp.scenarios import get_scenario


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    path = tmp_path / "bundle"
    shutil.copytree(digits_bundle, path)
    return path


def _agreement(bundle_path: Path, variant: str) -> tuple[float, float]:
    """(max |embedding difference| relative to the embedding scale, share of equal
    source-head predictions) against the torch backbone on target-stream features."""
    bundle = load_bundle(bundle_path)
    X, _, _ = get_scenario("digits-shift").target_data(2000)
    X = X.astype(np.float32)
    reference = make_embedder(bundle, "torch")(X)
    other = make_embedder(bundle, variant)(X)  # type: ignore[arg-type]
    scale = float(np.abs(reference).max())

    def predict(z: np.ndarray) -> np.ndarray:
        return (z @ bundle.head_coef.T + bundle.head_intercept).argmax(axis=1)

    same = float((predict(reference) == predict(other)).mean())
    return float(np.abs(other - reference).max()) / scale, same


def test_int8_backbone_predicts_like_the_float_one(digits_bundle: Path) -> None:
    error, same = _agreement(digits_bundle, "int8")
    assert error < 0.05
    assert same > 0.95  # on the shifted stream; the bench reports the accuracy change


def test_onnx_export_is_checksummed_and_matches_torch(bundle_copy: Path) -> None:
    export_onnx(bundle_copy)
    assert ONNX_FILE in load_bundle(bundle_copy).manifest.files
    error, same = _agreement(bundle_copy, "onnx")
    assert error < 1e-5
    assert same == 1.0


def test_a_tampered_onnx_file_is_refused(bundle_copy: Path) -> None:
    export_onnx(bundle_copy)
    with (bundle_copy / ONNX_FILE).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for backbone\.onnx"):
        load_bundle(bundle_copy)


def test_onnx_without_export_says_how_to_export(digits_bundle: Path) -> None:
    with pytest.raises(BundleError, match="models export"):
        make_embedder(load_bundle(digits_bundle), "onnx")


def test_quantized_variants_run_on_cpu_only(digits_bundle: Path) -> None:
    with pytest.raises(BundleError, match="CPU only"):
        make_embedder(load_bundle(digits_bundle), "int8", device="cuda")


def test_half_precision_needs_cuda(digits_bundle: Path) -> None:
    with pytest.raises(ConfigError, match="device=cuda"):
        make_embedder(load_bundle(digits_bundle), "torch", device="cpu", half=True)
