"""The model registry: verified copies by name/version, aliases with history."""

from __future__ import annotations

import shutil
from pathlib import Path

import orjson
import pytest

from streamapp.errors import BundleError, ConfigError
from streamapp.model.registry import ModelRef, Registry


def bundle_version(source: Path, target: Path, version: str) -> Path:
    """A copy of ``source`` that says it is ``version`` (the manifest is not checksummed)."""
    shutil.copytree(source, target)
    manifest = orjson.loads((target / "manifest.json").read_bytes())
    (target / "manifest.json").write_bytes(orjson.dumps({**manifest, "version": version}))
    return target


def registry_serving_v1(digits_bundle: Path, tmp_path: Path, versions: int) -> Registry:
    """A registry under ``tmp_path`` with versions 1..``versions`` (copies), 1 in production."""
    registry = Registry(tmp_path / "registry")
    registry.register(digits_bundle)
    for version in range(2, versions + 1):
        registry.register(bundle_version(digits_bundle, tmp_path / f"v{version}", str(version)))
    registry.promote("digits-shift", "1")
    return registry


def test_register_promote_rollback(digits_bundle: Path, tmp_path: Path) -> None:
    registry = Registry(tmp_path / "registry")
    v2 = bundle_version(digits_bundle, tmp_path / "v2", "2")
    assert registry.register(digits_bundle) == ModelRef("digits-shift", "1")
    assert registry.register(digits_bundle) == ModelRef("digits-shift", "1")  # idempotent
    registry.register(v2)
    assert registry.names() == ["digits-shift"]
    assert registry.versions("digits-shift") == ["1", "2"]

    registry.promote("digits-shift", "1")
    registry.promote("digits-shift", "2")
    assert registry.resolve("digits-shift", "production") == ModelRef("digits-shift", "2")
    assert registry.resolve("digits-shift", "1") == ModelRef("digits-shift", "1")
    assert registry.rollback("digits-shift") == ModelRef("digits-shift", "1")
    assert registry.aliases("digits-shift") == {"production": "1"}
    with pytest.raises(ConfigError, match="no earlier version"):
        registry.rollback("digits-shift")


def test_a_bad_bundle_is_refused_and_unknown_versions_are_errors(
    digits_bundle: Path, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    bad = bundle_version(digits_bundle, tmp_path / "bad", "3")
    (bad / "head.npz").write_bytes(b"tampered")
    with pytest.raises(BundleError, match="checksum"):
        registry.register(bad)
    assert registry.versions("digits-shift") == []
    with pytest.raises(ConfigError, match="no digits-shift version 9"):
        registry.promote("digits-shift", "9")
