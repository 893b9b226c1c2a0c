"""Model bundles on disk: a manifest, a backbone, a head and a drift reference.

```
<bundle>/manifest.json   name, version, task, classes, features, dims, input shape,
                         preprocessing, backbone format, sha256 per file
<bundle>/backbone.*      the feature extractor, in a format that unpickles no code (formats.py):
                         backbone.pt (state_dict, weights_only=True), backbone.safetensors,
                         backbone.pt2 (torch.export) or backbone.onnx
<bundle>/head.npz        source head weights (allow_pickle=False)
<bundle>/reference.npz   the source data's drift reference profile
<bundle>/backbone.onnx   optional: the backbone exported for onnxruntime (see variants.py)
```

A ``classification`` bundle (the default: manifests written before ``task`` existed are
classifiers) has two or more classes and one logit row per class (one for two classes); a
``regression`` bundle has no classes, one output row (``coef`` ``(1, k)``, ``intercept``
``(1,)``) and a reference profile whose prediction bins are cuts of predicted values.

Loading verifies every checksum, every shape and that every weight is finite before anything
is used, and refuses a bad bundle with :class:`~streamapp.errors.BundleError` whose message is
one line (the CLI prints it and exits 2). Nothing is unpickled.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle  # only for its exception type: nothing is unpickled
import re
import shutil
import tempfile
import zipfile
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch

from streamapp.drift.stats import ReferenceProfile
from streamapp.errors import BundleError
from streamapp.model.formats import (
    BACKBONE_FILES,
    copy_backbone,
    load_backbone,
    save_backbone,
)
from streamapp.model.logits import logit_rows

__all__ = [
    "FORMAT_VERSION",
    "TASKS",
    "Bundle",
    "Manifest",
    "check_new_bundle",
    "load_bundle",
    "sha256_file",
    "write_bundle",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
TASKS = ("classification", "regression")
_DATA_FILES = ("head.npz", "reference.npz")


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
    # events carry ``input_dim`` flat values; the backbone sees them as (n, *input_shape)
    input_shape: list[int] | None = None
    backbone_format: str = "state_dict"  # state_dict | safetensors | torch.export | onnx
    task: str = "classification"  # classification | regression (TASKS)

    @property
    def backbone_file(self) -> str:
        return BACKBONE_FILES.get(self.backbone_format, "backbone.pt")

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


def check_new_bundle(path: Path | str) -> Path:
    """Refuse an existing ``path`` before any work is spent on it (bundles are immutable)."""
    path = Path(path)
    if path.exists():
        raise BundleError(f"{path} already exists; bundles are immutable, write a new version")
    return path


def write_bundle(
    path: Path,
    manifest: Manifest,
    backbone: torch.nn.Module | Path,
    head_coef: np.ndarray,
    head_intercept: np.ndarray,
    reference: ReferenceProfile,
) -> Manifest:
    """Write a bundle atomically (to a temporary sibling, verified by loading it, then
    renamed); returns the manifest with its file checksums filled in. ``backbone`` is a module
    (its state_dict is saved in the manifest's ``backbone_format``) or a file copied as is
    (torch.export, ONNX). Nothing is left behind when writing or the verification fails."""
    path = check_new_bundle(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}-", dir=path.parent))
    try:
        final = _write_files(staging, manifest, backbone, head_coef, head_intercept, reference)
        try:
            load_bundle(staging)  # what would be refused on loading is never written
        except BundleError as exc:
            raise BundleError(str(exc).replace(str(staging), str(path))) from None
        check_new_bundle(path)  # another writer may have won meanwhile
        os.rename(staging, path)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("wrote bundle %s %s to %s", final.name, final.version, path)
    return final


def _write_files(
    staging: Path,
    manifest: Manifest,
    backbone: torch.nn.Module | Path,
    head_coef: np.ndarray,
    head_intercept: np.ndarray,
    reference: ReferenceProfile,
) -> Manifest:
    backbone_file = manifest.backbone_file
    if isinstance(backbone, Path):
        copy_backbone(backbone, staging / backbone_file, manifest.backbone_format)
    else:
        save_backbone(backbone, staging / backbone_file, manifest.backbone_format)
    np.savez(staging / "head.npz", coef=head_coef, intercept=head_intercept)
    reference_arrays: dict[str, Any] = reference.as_arrays()
    np.savez(staging / "reference.npz", **reference_arrays)
    files = {name: sha256_file(staging / name) for name in (backbone_file, *_DATA_FILES)}
    final = Manifest(**{**asdict(manifest), "files": files})
    (staging / "manifest.json").write_bytes(
        orjson.dumps(asdict(final), option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY)
    )
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
    if manifest.task not in TASKS:
        raise BundleError(
            f"{path}: unknown task {manifest.task!r}; expected one of {', '.join(TASKS)}"
        )
    if manifest.backbone_format not in BACKBONE_FILES:
        raise BundleError(f"{path}: unknown backbone format {manifest.backbone_format!r}")
    required = (manifest.backbone_file, *_DATA_FILES)
    missing = [name for name in required if name not in manifest.files]
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
    head = _load_arrays(path, "head.npz")
    try:
        coef, intercept = head["coef"], head["intercept"]
    except KeyError as exc:
        raise BundleError(f"{path}: head.npz lacks {exc}") from None
    try:
        reference = ReferenceProfile.from_arrays(_load_arrays(path, "reference.npz"))
    except KeyError as exc:
        raise BundleError(f"{path}: reference.npz lacks {exc}") from None
    except (TypeError, ValueError) as exc:
        raise BundleError(
            f"{path}: reference.npz is not a reference profile: {_brief(exc)}"
        ) from None
    _check_shapes(path, manifest, coef, intercept, reference)
    _check_finite(path, manifest, backbone, coef, intercept)
    return Bundle(path, manifest, backbone, coef, intercept, reference)


def _load_arrays(path: Path, name: str) -> dict[str, np.ndarray]:
    """The numeric arrays of ``name``; object arrays (which only pickle can load) and files
    that are not ``.npz`` archives are refused."""
    try:
        with np.load(path / name, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, AttributeError) as exc:
        # numpy says "Object arrays cannot be loaded when allow_pickle=False" for a pickled array
        raise BundleError(f"{path}: {name} is not a plain numeric .npz: {_brief(exc)}") from None
    for key, array in arrays.items():
        if not (np.issubdtype(array.dtype, np.number) or array.dtype == np.bool_):
            raise BundleError(f"{path}: {name}[{key!r}] has dtype {array.dtype}, not numeric")
    return arrays


def _check_finite(
    path: Path, m: Manifest, backbone: torch.nn.Module, coef: np.ndarray, intercept: np.ndarray
) -> None:
    """NaN or infinite weights would score every event as NaN: refuse them at load."""
    bad = [name for name, a in (("coef", coef), ("intercept", intercept)) if not _finite(a)]
    bad = [f"head.npz {name}" for name in bad]
    bad += [
        f"{m.backbone_file} {name}"
        for name, tensor in backbone.state_dict().items()
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
    ]
    bad += [
        f"manifest preprocessing.{key}"
        for key, values in m.preprocessing.items()
        if not _finite(np.asarray(values, np.float64))
    ]
    if bad:
        raise BundleError(f"{path}: non-finite weights in {', '.join(bad[:5])}")


def _finite(array: np.ndarray) -> bool:
    return bool(np.isfinite(array).all())


def _unpickling_reason(exc: BaseException) -> str:
    """The one useful sentence of torch's multi-line weights_only refusal: after its
    ``WeightsUnpickler error:`` marker, else (a blocked module's global) the paragraph that is
    not its advice to load with ``weights_only=False`` or to read the documentation.

    >>> _unpickling_reason(Exception("Weights only load failed.\\n\\tWeightsUnpickler error: "
    ...                               "Unsupported global: GLOBAL print was not allowed. More."))
    'Unsupported global: GLOBAL print was not allowed'
    >>> _unpickling_reason(Exception("Weights only load failed. Re-running `torch.load` with "
    ...     "`weights_only` set to `False` will likely succeed.\\n\\n\\nTrying to load unsupported "
    ...     "GLOBAL posix.system whose module posix is blocked.\\n\\nCheck the documentation."))
    'Trying to load unsupported GLOBAL posix.system whose module posix is blocked.'
    >>> _unpickling_reason(Exception("Weights only load failed. WeightsUnpickler error: \\n\\n"
    ...                               "Unsupported operand 149\\n\\nCheck the documentation."))
    'Unsupported operand 149'
    """
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    marker = "WeightsUnpickler error:"
    if marker in text:
        reason = re.split(r"\n\s*\n|\. ", text.split(marker, 1)[1].lstrip(), maxsplit=1)[0]
        return _brief(Exception(reason.strip().rstrip(".")))
    advice = ("Weights only load failed", "Check the documentation")
    reasons = [p for p in re.split(r"\n\s*\n", text) if p.strip() and not p.startswith(advice)]
    return _brief(Exception(" ".join(reasons) or text))


def _brief(exc: BaseException) -> str:
    """An exception as one short line (torch's pickle refusal spans several)."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:300] + "..."


def _load_backbone(path: Path, manifest: Manifest) -> torch.nn.Module:
    try:
        return load_backbone(
            path / manifest.backbone_file,
            manifest.backbone_format,
            dict(manifest.architecture),
            input_dim=manifest.input_dim,
            embedding_dim=manifest.embedding_dim,
            input_shape=manifest.input_shape,
        )
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from None
    except pickle.UnpicklingError as exc:  # weights_only=True refuses arbitrary objects
        raise BundleError(
            f"{path}: {manifest.backbone_file} is not a plain state_dict, refused to unpickle "
            f"it ({_unpickling_reason(exc)})"
        ) from exc
    except (RuntimeError, TypeError, ValueError, EOFError, OSError, AttributeError) as exc:
        raise BundleError(f"{path}: backbone does not match the manifest: {_brief(exc)}") from exc


def _check_shapes(
    path: Path, m: Manifest, coef: np.ndarray, intercept: np.ndarray, ref: ReferenceProfile
) -> None:
    n_classes = len(m.classes)
    regression = m.task == "regression"
    rows = 1 if regression else logit_rows(n_classes)
    problems = []
    if len(m.feature_names) != m.input_dim:
        problems.append(f"{len(m.feature_names)} feature names for input_dim {m.input_dim}")
    if m.input_shape is not None and int(np.prod(m.input_shape)) != m.input_dim:
        problems.append(f"input_shape {m.input_shape} does not hold {m.input_dim} values")
    if regression and n_classes:
        problems.append(f"a regression bundle has no classes, this one {n_classes}")
    if not regression and n_classes < 2:
        problems.append("fewer than 2 classes")
    if m.input_dim < 1:
        problems.append("no features")
    for what, names in (("class", m.classes), ("feature name", m.feature_names)):
        # labels and dict features are matched by text: 1 and "1" are the same name
        repeated = sorted(name for name, n in Counter(map(str, names)).items() if n > 1)
        if repeated:
            problems.append(f"repeated {what} {', '.join(map(repr, repeated[:5]))}")
    if coef.shape != (rows, m.embedding_dim) or intercept.shape != (rows,):
        problems.append(
            f"head {coef.shape}/{intercept.shape}, expected ({rows}, {m.embedding_dim})"
            + (" for a regression bundle" if regression else "")
        )
    for key in ("mean", "std"):
        if len(m.preprocessing.get(key, [])) != m.input_dim:
            problems.append(f"preprocessing.{key} does not have {m.input_dim} values")
    if ref.cuts.shape[0] != m.input_dim or not _prediction_bins_fit(ref, m, regression):
        what = "predicted-value bins" if regression else "classes"
        problems.append(f"reference profile does not match the features/{what}")
    if problems:
        raise BundleError(f"{path}: " + "; ".join(problems))


def _prediction_bins_fit(ref: ReferenceProfile, m: Manifest, regression: bool) -> bool:
    """A classifier's predictions are counted per class (no cuts); a regression model's on
    increasing, finite cuts of its predicted values (one more count than cuts)."""
    cuts, counts = ref.prediction_cuts, ref.prediction_counts
    if not regression:
        return cuts.size == 0 and counts.shape == (len(m.classes),)
    return (
        cuts.ndim == 1
        and counts.shape == (len(cuts) + 1,)
        and bool(np.isfinite(cuts).all())
        and bool(np.all(np.diff(cuts) > 0))
    )
