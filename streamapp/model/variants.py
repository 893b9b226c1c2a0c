"""Ways to run a bundle's backbone: ``torch`` (default), ``int8`` and ``onnx``.

- ``torch``: the bundle's state_dict in PyTorch; float64 on CPU (replays are bitwise exact),
  float32 or float16 on CUDA.
- ``int8``: PyTorch dynamic quantization of the Linear layers
  (``torch.ao.quantization.quantize_dynamic``), made from the same weights at load time, CPU.
- ``onnx``: ``backbone.onnx`` exported into the bundle by ``streamapp models export`` (its
  checksum joins the manifest), scored with onnxruntime on CPU.

``int8`` and ``onnx`` compute in float32 or lower: an event replayed after a crash can get an
embedding that differs in the last bits, so exactly-once outputs hold but the learned head
matches an uninterrupted run to ~1e-7 rather than bitwise.
"""

from __future__ import annotations

import copy
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
import orjson
import torch

from streamapp.errors import BundleError, ConfigError
from streamapp.model.backbone import Embedder, impute_missing
from streamapp.model.bundle import Bundle, load_bundle, sha256_file

__all__ = ["ONNX_FILE", "VARIANTS", "Variant", "export_onnx", "make_embedder"]

logger = logging.getLogger(__name__)

Variant = Literal["torch", "int8", "onnx"]
VARIANTS: tuple[Variant, ...] = ("torch", "int8", "onnx")
ONNX_FILE = "backbone.onnx"

Embed = Callable[[np.ndarray], np.ndarray]


def make_embedder(
    bundle: Bundle, variant: Variant = "torch", device: str = "cpu", half: bool = False
) -> Embed:
    """The embedding function of ``bundle``'s backbone, run as ``variant``."""
    m = bundle.manifest
    mean, std = np.asarray(m.preprocessing["mean"]), np.asarray(m.preprocessing["std"])
    # a feature the codec let through as missing (missing=impute) becomes its source mean
    shape, impute = m.input_shape, bundle.reference.mean
    if half and device == "cpu":
        raise ConfigError("half precision needs device=cuda")
    if variant != "torch" and device != "cpu":
        raise BundleError(f"the {variant} variant runs on CPU only (device={device})")
    if variant == "torch":
        return Embedder(
            bundle.backbone, mean, std, device=device, half=half, input_shape=shape, impute=impute
        )
    if variant == "int8":
        if not any(isinstance(layer, torch.nn.Linear) for layer in bundle.backbone.modules()):
            raise ConfigError(
                f"variant=int8 quantizes torch Linear layers, and this {m.backbone_format} "
                "backbone shows none (it would run unquantized): serve variant=torch"
            )
        return Embedder(
            quantize_int8(bundle.backbone),
            mean,
            std,
            exact=False,
            input_shape=shape,
            impute=impute,
        )
    if variant == "onnx":
        if m.backbone_format == "torch.export":
            raise ConfigError(
                "variant=onnx needs an ONNX backbone and this one is a torch.export program: "
                "export your network with torch.onnx.export and import that, or serve "
                "variant=torch"
            )
        onnx_file = bundle.path / (m.backbone_file if m.backbone_format == "onnx" else ONNX_FILE)
        return OnnxEmbedder(onnx_file, mean, std, input_shape=shape, impute=impute)
    raise BundleError(f"unknown backbone variant {variant!r}; expected one of {VARIANTS}")


def quantize_int8(backbone: torch.nn.Module) -> torch.nn.Module:
    """Linear layers with int8 weights and dynamically quantized activations."""
    with warnings.catch_warnings():
        # torch.ao.quantization points to torchao; the eager API still works and ships
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        return torch.ao.quantization.quantize_dynamic(
            copy.deepcopy(backbone).float().eval(), {torch.nn.Linear}, dtype=torch.qint8
        )


class OnnxEmbedder:
    """The exported backbone in onnxruntime; standardization in numpy (float32).

    The file's checksum was verified with the bundle (it is listed in the manifest).
    """

    def __init__(
        self,
        path: Path,
        mean: np.ndarray,
        std: np.ndarray,
        input_shape: list[int] | None = None,
        impute: np.ndarray | None = None,
    ) -> None:
        try:
            import onnxruntime
        except ImportError as exc:
            raise BundleError(
                "the onnx variant needs onnxruntime: pip install onnxruntime"
            ) from exc
        if not path.is_file():
            raise BundleError(f"{path} is missing: run `streamapp models export {path.parent}`")
        options = onnxruntime.SessionOptions()
        # one thread, like torch_threads=1: the broker client needs the other core
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self._session = onnxruntime.InferenceSession(
            str(path), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self._mean = mean.astype(np.float32)
        self._inv_std = (1.0 / std).astype(np.float32)
        self._shape = tuple(input_shape) if input_shape else None
        self._impute = None if impute is None else np.asarray(impute, np.float32)

    def __call__(self, X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, np.float32)
        if self._impute is not None:
            X = impute_missing(X, self._impute)
        x = (X - self._mean) * self._inv_std
        if self._shape is not None:
            x = x.reshape(len(x), *self._shape)
        (z,) = self._session.run(None, {self._input: x})
        return np.asarray(z, np.float32)


def export_onnx(bundle_path: Path | str) -> Path:
    """Export the bundle's backbone to ``backbone.onnx`` and record its checksum in the
    manifest (rewritten atomically). The weights are the bundle's: its version stays."""
    bundle = load_bundle(bundle_path)
    m = bundle.manifest
    if m.backbone_format == "onnx":
        raise BundleError(f"{bundle.path}: the backbone is ONNX already; nothing to export")
    if m.backbone_format == "torch.export":
        raise BundleError(
            f"{bundle.path}: a torch.export program is not converted here: export your network "
            "with torch.onnx.export and import that as a bundle of its own"
        )
    target = bundle.path / ONNX_FILE
    staging = target.with_suffix(".onnx.tmp")
    example = torch.zeros(2, *(m.input_shape or [m.input_dim]))
    with warnings.catch_warnings():
        # the TorchScript-based exporter is deprecated in favor of dynamo=True, which needs
        # onnxscript; for a plain MLP both give the same graph
        warnings.simplefilter("ignore")
        torch.onnx.export(
            copy.deepcopy(bundle.backbone).float().eval(),
            (example,),
            str(staging),
            input_names=["features"],
            output_names=["embedding"],
            dynamic_axes={"features": {0: "batch"}, "embedding": {0: "batch"}},
            dynamo=False,
        )
    os.replace(staging, target)
    manifest_path = bundle.path / "manifest.json"
    manifest = orjson.loads(manifest_path.read_bytes())
    manifest["files"][ONNX_FILE] = sha256_file(target)
    manifest_staging = manifest_path.with_suffix(".json.tmp")
    manifest_staging.write_bytes(orjson.dumps(manifest, option=orjson.OPT_INDENT_2))
    os.replace(manifest_staging, manifest_path)
    logger.info("exported %s (sha256 %s)", target, manifest["files"][ONNX_FILE][:12])
    return target
