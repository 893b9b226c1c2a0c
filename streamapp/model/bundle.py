"""Model bundles on disk: a manifest, a state_dict backbone, a head and a drift reference.

```
<bundle>/manifest.json   name, version, classes, features, dims, preprocessing, sha256 per file
<bundle>/backbone.pt     state_dict of a named architecture, loaded with weights_only=True
<bundle>/head.npz        source head weights (allow_pickle=False)
<bundle>/reference.npz   the source data's drift reference profile
<bundle>/backbone.onnx   optional: the backbone exported for onnxruntime (see variants.py)
```

Loading verifies every checksum and every shape before anything is used, and refuses a
bad bundle with :class:`~streamapp.errors.BundleError`. Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle  # only for its exception type: nothing is unpickled
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from streamapp.drift.stats import ReferenceProfile
from streamapp.errors import BundleError
from streamapp.model.backbone import ARCHITECTURES

__all__ = ["FORMAT_VERSION", "Bundle", "Manifest", "load_bundle", "sha256_file", "write_bundle"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
_FILES = ("backbone.pt", "head.npz", "reference.npz")


@dataclass(frozen=True)
class Manifest:
    """What a bundle declares about itself."""

    name: str
    version: str
    classes: list[str]
    feature_names: list[str]
    input_dim: int
    embedding_dim: int
    architecture: dict[str, Any]  # {"name": "mlp", "hidden": [...]}
    preprocessing: dict[str, list[float]]  # {"mean": [...], "std": [...]}
    source_metrics: dict[str, float] = field(default_factory=dict)
    files: dict[str, str] = field(default_factory=dict)  # file name -> sha256
    format_version: int = FORMAT_VERSION
    created_ts: float = 0.0

    @classmethod
    def from_json(cls, raw: bytes) -> Manifest:
        try:
            data = orjson.loads(raw)
            return cls(**data)
        except (orjson.JSONDecodeError, TypeError) as exc:
            raise BundleError(f"manifest.json is not a valid manifest: {exc}") from exc


@dataclass(frozen=True)
class Bundle:
    """A verified, loaded bundle."""

    path: Path
    manifest: Manifest
    backbone: torch.nn.Module
    head_coef: np.ndarray
    head_intercept: np.ndarray
    reference: ReferenceProfile

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> str:
        return self.manifest.version


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_bundle(
    path: Path,
    manifest: Manifest,
    backbone: torch.nn.Module,
    head_coef: np.ndarray,
    head_intercept: np.ndarray,
    reference: ReferenceProfile,
) -> Manifest:
    """Write a bundle atomically (to a temporary sibling, then rename); returns the manifest
    with its file checksums filled in."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    torch.save(backbone.state_dict(), staging / "backbone.pt")
    np.savez(staging / "head.npz", coef=head_coef, intercept=head_intercept)
    np.savez(staging / "reference.npz", **reference.as_arrays())
    files = {name: sha256_file(staging / name) for name in _FILES}
    final = Manifest(**{**asdict(manifest), "files": files})
    (staging / "manifest.json").write_bytes(
        orjson.dumps(asdict(final), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
    if path.exists():
        raise BundleError(f"{path} already exists; bundles are immutable, write a new version")
    os.rename(staging, path)
    logger.info("wrote bundle %s %s to %s", final.name, final.version, path)
    return final


def load_bundle(path: Path | str) -> Bundle:
    """Load and verify a bundle; raises :class:`BundleError` with the reason if it is bad."""
    path = Path(path)
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise BundleError(f"{path}: no manifest.json (is this a model bundle?)")
    manifest = Manifest.from_json(manifest_path.read_bytes())
    if manifest.format_version != FORMAT_VERSION:
        raise BundleError(
            f"{path}: bundle format {manifest.format_version}, expected {FORMAT_VERSION}"
        )
    missing = [name for name in _FILES if name not in manifest.files]
    if missing:
        raise BundleError(f"{path}: manifest lists no checksum for {', '.join(missing)}")
    for name, expected in manifest.files.items():  # exported variants are checked too
        if not (path / name).is_file():
            raise BundleError(f"{path}: {name} is missing")
        actual = sha256_file(path / name)
        if actual != expected:
            raise BundleError(
                f"{path}: checksum mismatch for {name} ({actual[:12]} != {expected[:12]})"
            )

    backbone = _load_backbone(path, manifest)
    with np.load(path / "head.npz", allow_pickle=False) as head:
        coef, intercept = head["coef"], head["intercept"]
    with np.load(path / "reference.npz", allow_pickle=False) as ref:
        try:
            reference = ReferenceProfile.from_arrays(dict(ref))
        except KeyError as exc:
            raise BundleError(f"{path}: reference.npz lacks {exc}") from None
    _check_shapes(path, manifest, coef, intercept, reference)
    return Bundle(path, manifest, backbone, coef, intercept, reference)


def _load_backbone(path: Path, manifest: Manifest) -> torch.nn.Module:
    arch = dict(manifest.architecture)
    factory = ARCHITECTURES.get(arch.pop("name", ""))
    if factory is None:
        raise BundleError(f"{path}: unknown architecture {manifest.architecture!r}")
    try:
        module = factory(input_dim=manifest.input_dim, embedding_dim=manifest.embedding_dim, **arch)
        state = torch.load(path / "backbone.pt", map_location="cpu", weights_only=True)
        module.load_state_dict(state)
    except pickle.UnpicklingError as exc:  # weights_only=True refuses arbitrary objects
        raise BundleError(f"{path}: backbone.pt is not a plain state_dict: {exc}") from exc
    except (RuntimeError, TypeError, ValueError) as exc:
        raise BundleError(f"{path}: backbone does not match the manifest: {exc}") from exc
    return module


def _check_shapes(
    path: Path, m: Manifest, coef: np.ndarray, intercept: np.ndarray, ref: ReferenceProfile
) -> None:
    n_classes = len(m.classes)
    rows = 1 if n_classes == 2 else n_classes
    problems = []
    if len(m.feature_names) != m.input_dim:
        problems.append(f"{len(m.feature_names)} feature names for input_dim {m.input_dim}")
    if n_classes < 2:
        problems.append("fewer than 2 classes")
    if coef.shape != (rows, m.embedding_dim) or intercept.shape != (rows,):
        problems.append(
            f"head {coef.shape}/{intercept.shape}, expected ({rows}, {m.embedding_dim})"
        )
    for key in ("mean", "std"):
        if len(m.preprocessing.get(key, [])) != m.input_dim:
            problems.append(f"preprocessing.{key} does not have {m.input_dim} values")
    if ref.cuts.shape[0] != m.input_dim or ref.prediction_counts.shape != (n_classes,):
        problems.append("reference profile does not match the features/classes")
    if problems:
        raise BundleError(f"{path}: " + "; ".join(problems))
