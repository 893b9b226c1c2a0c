"""A model registry on a directory: verified bundles by name and version, with aliases.

::

    <root>/<name>/<version>/   a verified copy of a bundle
    <root>/<name>/aliases.json {"aliases": {"production": "2"},
                                "history": {"production": ["1", "2"]}}

``promote`` points an alias at a version and remembers the previous one; ``rollback`` goes
back one step. Alias files are replaced atomically, so a reader never sees half a file.
Workers resolve ``<name>@<alias>`` at start and follow promotions on the control topic
(:mod:`streamapp.serving.hotswap`).

>>> import tempfile
>>> registry = Registry(Path(tempfile.mkdtemp()))
>>> registry.versions("digits")
[]
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from streamapp.errors import ConfigError
from streamapp.model.bundle import Manifest, load_bundle

__all__ = ["ModelRef", "Registry"]

logger = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class ModelRef:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


def _version_key(version: str) -> tuple[int, int | str]:
    return (0, int(version)) if version.isdigit() else (1, version)


class Registry:
    """Bundles under ``root``; every bundle is verified (checksums, shapes) on the way in."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir())

    def versions(self, name: str) -> list[str]:
        folder = self.root / name
        if not folder.is_dir():
            return []
        found = [p.name for p in folder.iterdir() if (p / "manifest.json").is_file()]
        return sorted(found, key=_version_key)

    def path(self, name: str, version: str) -> Path:
        path = self.root / name / version
        if not (path / "manifest.json").is_file():
            raise ConfigError(f"registry {self.root}: no {name} version {version}")
        return path

    def register(self, bundle_dir: Path) -> ModelRef:
        """Copy a verified bundle in as ``<name>/<version>`` (its manifest's)."""
        bundle = load_bundle(bundle_dir)  # refuses a bad bundle with the reason
        ref = ModelRef(bundle.name, bundle.version)
        for part in (ref.name, ref.version):
            if not _NAME.match(part):
                raise ConfigError(f"{part!r} cannot be a registry name or version")
        target = self.root / ref.name / ref.version
        if target.exists():
            existing = Manifest.from_json((target / "manifest.json").read_bytes())
            if existing.files == bundle.manifest.files:
                logger.info("%s is already registered", ref)
                return ref
            raise ConfigError(f"{ref} is already registered with other files")
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{ref.version}-", dir=target.parent))
        shutil.copytree(bundle_dir, staging, dirs_exist_ok=True)
        staging.rename(target)  # all at once: a half-copied version is never visible
        logger.info("registered %s", ref)
        return ref

    # -- aliases -----------------------------------------------------------------------------

    def _aliases_path(self, name: str) -> Path:
        return self.root / name / "aliases.json"

    def _read(self, name: str) -> dict[str, Any]:
        path = self._aliases_path(name)
        if not path.is_file():
            return {"aliases": {}, "history": {}}
        return orjson.loads(path.read_bytes())

    def _write(self, name: str, data: dict[str, Any]) -> None:
        path = self._aliases_path(name)
        fd, temp = tempfile.mkstemp(prefix=".aliases-", dir=path.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(orjson.dumps(data, option=orjson.OPT_INDENT_2))
        os.replace(temp, path)

    def aliases(self, name: str) -> dict[str, str]:
        return dict(self._read(name)["aliases"])

    def resolve(self, name: str, alias_or_version: str) -> ModelRef:
        """``production`` (an alias) or ``2`` (a version) of ``name``."""
        version = self.aliases(name).get(alias_or_version, alias_or_version)
        self.path(name, version)
        return ModelRef(name, version)

    def promote(self, name: str, version: str, alias: str = "production") -> ModelRef:
        self.path(name, version)
        data = self._read(name)
        data["aliases"][alias] = version
        data["history"].setdefault(alias, []).append(version)
        self._write(name, data)
        logger.info("%s/%s is now %s", name, version, alias)
        return ModelRef(name, version)

    def rollback(self, name: str, alias: str = "production") -> ModelRef:
        """Point ``alias`` back at the version it had before the last promotion."""
        data = self._read(name)
        history = data["history"].get(alias, [])
        if len(history) < 2:
            raise ConfigError(f"{name}@{alias} has no earlier version to roll back to")
        history.pop()
        data["aliases"][alias] = history[-1]
        self._write(name, data)
        logger.info("%s@%s rolled back to %s", name, alias, history[-1])
        return ModelRef(name, history[-1])
