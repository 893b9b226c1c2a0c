"""The flat Avro reader reads exactly what fastavro reads, and refuses what it cannot read."""

from __future__ import annotations

import io
import random
import struct
from typing import Any

import fastavro
import pytest

from streamapp.codec.avro_flat import flat_reader

PRIMITIVES = ["double", "float", "int", "long", "string", "boolean", "bytes"]


def value_of(t: Any, rng: random.Random) -> Any:
    if isinstance(t, list):
        return value_of(rng.choice(t), rng)
    if isinstance(t, dict):
        if t["type"] == "enum":
            return rng.choice(t["symbols"])
        return [rng.uniform(-1e6, 1e6) for _ in range(rng.randrange(0, 40))]
    return {
        "null": None,
        "double": rng.uniform(-1e300, 1e300),
        "float": float(rng.randrange(-1000, 1000)) / 4,
        "int": rng.randrange(-(2**31), 2**31),
        "long": rng.randrange(-(2**63), 2**63),
        "string": "".join(rng.choice("aé€😀z") for _ in range(rng.randrange(0, 90))),
        "boolean": rng.random() < 0.5,
        "bytes": rng.randbytes(rng.randrange(0, 70)),
    }[t]


def random_schema(rng: random.Random, n: int) -> dict[str, Any]:
    fields = []
    for i in range(n):
        pick = rng.random()
        if pick < 0.6:
            t: Any = rng.choice(PRIMITIVES)
        elif pick < 0.8:
            t = ["null", rng.choice(PRIMITIVES)]
        elif pick < 0.9:
            t = {"type": "enum", "name": f"E{i}", "symbols": ["A", "B", "C"]}
        else:
            t = {"type": "array", "items": rng.choice(["double", "float"])}
        fields.append({"name": f"f{i}", "type": t})
    return {"type": "record", "name": "R", "fields": fields}


def encode(schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return out.getvalue()


@pytest.mark.parametrize("seed", range(20))
def test_random_flat_records_read_as_fastavro_reads_them(seed: int) -> None:
    rng = random.Random(seed)
    schema = random_schema(rng, rng.randrange(1, 80))
    read = flat_reader(schema)
    assert read is not None
    parsed = fastavro.parse_schema(schema)
    for _ in range(20):
        record = {f["name"]: value_of(f["type"], rng) for f in schema["fields"]}
        payload = encode(schema, record)
        expected = fastavro.schemaless_reader(io.BytesIO(payload), parsed, None)
        assert read(payload) == [expected[f["name"]] for f in schema["fields"]]
        cut = rng.randrange(0, len(payload)) if payload else 0
        if cut < len(payload):  # a truncated payload never reads as a record
            with pytest.raises((ValueError, IndexError, struct.error)):
                read(payload[:cut])
        with pytest.raises(ValueError, match=r"after the record|bytes for a record"):
            read(payload + b"\x00")


@pytest.mark.parametrize(
    "schema",
    [
        {
            "type": "record",
            "name": "T",
            "fields": [{"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}}],
        },
        {
            "type": "record",
            "name": "N",
            "fields": [{"name": "r", "type": {"type": "record", "name": "I", "fields": []}}],
        },
        {
            "type": "record",
            "name": "M",
            "fields": [{"name": "m", "type": {"type": "map", "values": "double"}}],
        },
        {"type": "array", "items": "double"},
        {
            "type": "record",
            "name": "A",
            "fields": [{"name": "v", "type": {"type": "array", "items": ["null", "double"]}}],
        },
    ],
)
def test_what_it_does_not_read_is_left_to_fastavro(schema: dict[str, Any]) -> None:
    assert flat_reader(schema) is None
