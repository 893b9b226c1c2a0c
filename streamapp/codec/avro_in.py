"""streamapp's own Avro outputs read back as the JSON documents they twin: what lets
``streamapp report --from-topic`` read an Avro drift topic
(:mod:`streamapp.codec.avro_out` writes it).

A value in the Confluent wire format is read with its writer schema: the registry's for its
id when a registry is configured, else the twin in ``schemas/`` (what streamapp writes). An
optional property Avro read as null is left out when the JSON Schema does not allow it null,
so the document is the one the JSON output would have carried.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import Any

from streamapp.codec.avro_out import load_avro_schema
from streamapp.schemas import load_schema

__all__ = ["AvroDocuments", "as_json_document"]

logger = logging.getLogger(__name__)

_MAGIC = b"\x00"


def _nullable(spec: dict[str, Any]) -> bool:
    t = spec.get("type")
    return None in spec.get("enum", []) or t == "null" or (isinstance(t, list) and "null" in t)


def as_json_document(doc: Any, spec: dict[str, Any], root: dict[str, Any] | None = None) -> Any:
    """``doc`` (as Avro read it) as its JSON twin writes it, following the JSON Schema
    ``spec``: an optional property that is null is absent, unless the JSON Schema allows it
    null; map values keep their nulls.

    >>> spec = {"required": ["a"], "properties": {
    ...     "a": {"type": ["number", "null"]}, "b": {"type": "number"},
    ...     "c": {"type": ["number", "null"]}, "m": {"additionalProperties": {}}}}
    >>> as_json_document({"a": None, "b": None, "c": None, "m": {"x": None}}, spec)
    {'a': None, 'c': None, 'm': {'x': None}}
    """
    root = spec if root is None else root
    if "$ref" in spec:
        target: Any = root
        for part in spec["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        spec = target
    if isinstance(doc, dict):
        props, required = spec.get("properties", {}), set(spec.get("required", []))
        values = spec.get("additionalProperties")
        values = values if isinstance(values, dict) else {}
        return {
            k: as_json_document(v, props.get(k, values), root)
            for k, v in doc.items()
            if not (v is None and k in props and k not in required and not _nullable(props[k]))
        }
    if isinstance(doc, list):
        return [as_json_document(v, spec.get("items", {}), root) for v in doc]
    return doc


class AvroDocuments:
    """Reads the values of one of streamapp's Avro output topics as JSON documents.

    ``schema_name``: the twin (``drift-report``, ``prediction``, ``dead-letter``);
    ``client``: a registry client to fetch each writer schema by id (cached), or None to
    read with the twin.
    """

    def __init__(self, schema_name: str, client: Any | None = None) -> None:
        self.json_schema = load_schema(schema_name)
        self.twin = load_avro_schema(schema_name)
        self.client = client
        self._readers: dict[int, Callable[[io.BytesIO], Any]] = {}

    @staticmethod
    def is_avro(value: bytes) -> bool:
        """In the Confluent wire format (a JSON document starts with ``{``)."""
        return len(value) > 5 and value[:1] == _MAGIC

    def decode(self, value: bytes) -> dict[str, Any]:
        """The JSON document of one framed value; ValueError when it cannot be read."""
        if not self.is_avro(value):
            raise ValueError("not in the Confluent wire format")
        schema_id = int.from_bytes(value[1:5], "big")
        read = self._readers.get(schema_id) or self._reader(schema_id)
        try:
            doc = read(io.BytesIO(value[5:]))
        except Exception as exc:  # fastavro raises what the bytes make it raise
            raise ValueError(f"schema id {schema_id}: {type(exc).__name__}: {exc}") from None
        out: dict[str, Any] = as_json_document(doc, self.json_schema)
        return out

    def _reader(self, schema_id: int) -> Callable[[io.BytesIO], Any]:
        import json

        import fastavro

        schema: Any = self.twin
        if self.client is not None:
            try:
                schema = json.loads(self.client.get_schema(schema_id).schema_str)
            except Exception as exc:
                raise ValueError(f"schema id {schema_id}: {type(exc).__name__}: {exc}") from None
        parsed = fastavro.parse_schema(schema)

        def read(buf: io.BytesIO) -> Any:
            return fastavro.schemaless_reader(buf, parsed)

        self._readers[schema_id] = read
        return read
