"""The JSON Schemas under ``schemas/``, loaded and compiled once."""

from __future__ import annotations

import functools
import importlib.resources
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import orjson

__all__ = ["SCHEMA_NAMES", "load_schema", "schema_dir", "validator"]

SCHEMA_NAMES = (
    "feature-event",
    "feedback",
    "prediction",
    "drift-report",
    "dead-letter",
    "regression-feedback",
    "regression-prediction",
)


@functools.cache
def schema_dir() -> Path:
    """Installed wheels carry ``streamapp/schemas``; a source checkout has ``schemas/``."""
    packaged = Path(str(importlib.resources.files("streamapp"))) / "schemas"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parent.parent / "schemas"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """The parsed schema ``schemas/<name>.schema.json``."""
    return orjson.loads((schema_dir() / f"{name}.schema.json").read_bytes())


@functools.cache
def validator(name: str) -> Callable[[Any], Any]:
    """A compiled validator that raises ``fastjsonschema.JsonSchemaException``."""
    return fastjsonschema.compile(load_schema(name))
