from __future__ import annotations

import os
import pickle
import re
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from streamapp.errors import BundleError
from streamapp.model.bundle import load_bundle


@pytest.fixture
def bundle_copy(digits_bundle: Path, tmp_path: Path) -> Path:
    target = tmp_path / "bundle"
    shutil.copytree(digits_bundle, target)
    return target


def test_bundle_loads_with_consistent_parts(digits_bundle: Path) -> None:
    bundle = load_bundle(digits_bundle)
    m = bundle.manifest
    assert (m.name, m.version, m.input_dim, m.embedding_dim) == ("digits-shift", "1", 64, 32)
    assert m.classes == [str(i) for i in range(10)]
    assert bundle.head_coef.shape == (10, 32)
    assert m.source_metrics["test_accuracy"] > 0.9
    assert set(m.files) == {"backbone.pt", "head.npz", "reference.npz"}
    assert bundle.reference.prediction_counts.sum() == m.source_metrics["train_size"]


@pytest.mark.parametrize("name", ["backbone.pt", "head.npz", "reference.npz"])
def test_a_tampered_file_is_refused(bundle_copy: Path, name: str) -> None:
    with (bundle_copy / name).open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=re.escape(f"checksum mismatch for {name}")):
        load_bundle(bundle_copy)


def test_a_missing_file_is_refused(bundle_copy: Path) -> None:
    (bundle_copy / "head.npz").unlink()
    with pytest.raises(BundleError, match=r"head\.npz is missing"):
        load_bundle(bundle_copy)


def test_a_manifest_that_lies_about_shapes_is_refused(bundle_copy: Path) -> None:
    manifest = orjson.loads((bundle_copy / "manifest.json").read_bytes())
    manifest["embedding_dim"] = 16
    (bundle_copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(BundleError, match="backbone does not match"):
        load_bundle(bundle_copy)


def test_a_head_of_the_wrong_shape_is_refused_even_with_a_valid_checksum(bundle_copy: Path) -> None:
    from streamapp.model.bundle import sha256_file

    np.savez(bundle_copy / "head.npz", coef=np.zeros((3, 32)), intercept=np.zeros(3))
    manifest = orjson.loads((bundle_copy / "manifest.json").read_bytes())
    manifest["files"]["head.npz"] = sha256_file(bundle_copy / "head.npz")
    (bundle_copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(BundleError, match="head"):
        load_bundle(bundle_copy)


def test_not_a_bundle_and_garbage_manifest_are_refused(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match=r"no manifest\.json"):
        load_bundle(tmp_path)
    (tmp_path / "manifest.json").write_bytes(b"{")
    with pytest.raises(BundleError, match="not a valid manifest"):
        load_bundle(tmp_path)


def test_pickled_backbone_is_refused(bundle_copy: Path) -> None:
    """weights_only=True: a pickled object does not load, even with a valid checksum."""
    import pickle

    from streamapp.model.bundle import sha256_file

    (bundle_copy / "backbone.pt").write_bytes(pickle.dumps(print, protocol=2))
    manifest = orjson.loads((bundle_copy / "manifest.json").read_bytes())
    manifest["files"]["backbone.pt"] = sha256_file(bundle_copy / "backbone.pt")
    (bundle_copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    with pytest.raises(BundleError):
        load_bundle(bundle_copy)


def test_bundles_are_immutable(digits_bundle: Path) -> None:
    from streamapp.model.bundle import write_bundle

    bundle = load_bundle(digits_bundle)
    with pytest.raises(BundleError, match="already exists"):
        write_bundle(
            digits_bundle,
            bundle.manifest,
            bundle.backbone,
            bundle.head_coef,
            bundle.head_intercept,
            bundle.reference,
        )


def test_a_bundle_that_would_not_load_is_never_written(digits_bundle: Path, tmp_path: Path) -> None:
    from streamapp.model.bundle import write_bundle

    bundle = load_bundle(digits_bundle)
    out = tmp_path / "models" / "digits" / "2"
    with pytest.raises(BundleError, match=f"{out}: non-finite weights in head.npz"):
        write_bundle(
            out,
            bundle.manifest,
            bundle.backbone,
            np.full_like(bundle.head_coef, np.nan),
            bundle.head_intercept,
            bundle.reference,
        )
    assert list(out.parent.iterdir()) == []  # neither the bundle nor its staging folder


# -- every bundle error is one line (issue 11, item 9) -----------------------------------------


def _rewrite(bundle: Path, name: str, write: Callable[[Path], None]) -> None:
    """Replace ``name`` and its checksum, as a careless (or hostile) exporter would."""
    from streamapp.model.bundle import sha256_file

    write(bundle / name)
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))


def object_head(bundle: Path) -> None:
    def write(path: Path) -> None:
        with path.open("wb") as handle:  # np.savez would add ".npz" to a non-file name
            np.savez(handle, coef=np.array([{"x": 1}] * 2, dtype=object), intercept=np.zeros(10))

    _rewrite(bundle, "head.npz", write)


def nan_head(bundle: Path) -> None:
    def write(path: Path) -> None:
        with path.open("wb") as handle:
            np.savez(handle, coef=np.full((10, 32), np.nan), intercept=np.zeros(10))

    _rewrite(bundle, "head.npz", write)


def nan_backbone(bundle: Path) -> None:
    def write(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        first = next(iter(state))
        state[first] = state[first].clone()
        state[first].view(-1)[0] = float("nan")
        torch.save(state, path)

    _rewrite(bundle, "backbone.pt", write)


def pickled_backbone(bundle: Path) -> None:
    _rewrite(bundle, "backbone.pt", lambda path: path.write_bytes(pickle.dumps(print, protocol=2)))


class _RunsCode:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.system, ("touch streamapp-was-pwned",))


def code_pickle_backbone(bundle: Path) -> None:
    """A zip-format torch file whose pickle calls os.system (torch 2.13 words this refusal
    without the marker the first one has)."""
    _rewrite(bundle, "backbone.pt", lambda path: torch.save({"w": _RunsCode()}, path))


def protocol4_pickle_backbone(bundle: Path) -> None:
    """A raw pickle of protocol 4: torch warns about the protocol before refusing it."""
    _rewrite(bundle, "backbone.pt", lambda path: path.write_bytes(pickle.dumps(_RunsCode(), 4)))


def garbage_head(bundle: Path) -> None:
    _rewrite(bundle, "head.npz", lambda path: path.write_bytes(b"not a zip at all"))


def repeated_class(bundle: Path) -> None:
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    manifest["classes"][-1] = int(manifest["classes"][0])  # 0 and "0": the same label text
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))


def repeated_feature(bundle: Path) -> None:
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    manifest["feature_names"][1] = manifest["feature_names"][0]
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))


BREAKERS: dict[str, tuple[Callable[[Path], None], str]] = {
    "repeated_class": (repeated_class, "repeated class '0'"),
    "repeated_feature": (repeated_feature, "repeated feature name"),
    "object_head": (object_head, "head.npz is not a plain numeric .npz"),
    "nan_head": (nan_head, "non-finite weights in head.npz coef"),
    "nan_backbone": (nan_backbone, "non-finite weights in backbone.pt"),
    "pickled_backbone": (pickled_backbone, "refused to unpickle it (Unsupported global"),
    "garbage_head": (garbage_head, "head.npz is not a plain numeric .npz"),
    "code_pickle_backbone": (code_pickle_backbone, "unsupported GLOBAL posix.system"),
    "protocol4_pickle_backbone": (protocol4_pickle_backbone, "unpickle it (Unsupported operand"),
}


@pytest.mark.parametrize("kind", list(BREAKERS))
def test_each_bad_bundle_is_a_one_line_bundle_error(bundle_copy: Path, kind: str) -> None:
    breaker, expected = BREAKERS[kind]
    breaker(bundle_copy)
    with pytest.raises(BundleError) as refused:
        load_bundle(bundle_copy)
    message = str(refused.value)
    assert expected in message
    assert "\n" not in message and len(message) < 600
