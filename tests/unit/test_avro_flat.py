"""The flat Avro reader reads what fastavro reads, to the same values, and refuses what it
cannot read (and a few malformed payloads fastavro reads anyway)."""

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


# what the flat reader refuses although fastavro reads it (no Avro writer produces these)
STRICTER = ("varint longer than 10 bytes", "boolean byte", "union index byte", "after the record")
STRICTER += ("bytes for a record of", "enum index -")  # all-fixed trailing bytes; negative


def _outcome(read: Any, payload: bytes) -> tuple[str, Any]:
    try:
        return "ok", read(payload)
    except Exception as exc:
        return "err", f"{type(exc).__name__}: {exc}"


@pytest.mark.parametrize("seed", range(6))
def test_hostile_bytes_the_flat_reader_accepts_fastavro_reads_the_same(seed: int) -> None:
    """Mutated, truncated, extended and random payloads: whatever the flat reader accepts,
    fastavro reads to the same values, and it refuses only what fastavro refuses or one of
    the stricter cases its docstring names."""
    rng = random.Random(seed)
    schema = random_schema(rng, rng.randrange(1, 8))
    parsed = fastavro.parse_schema(schema)
    names = [f["name"] for f in schema["fields"]]
    flat = flat_reader(schema)
    assert flat is not None

    def slow(payload: bytes) -> list[Any]:
        return list(fastavro.schemaless_reader(io.BytesIO(payload), parsed, None).values())

    edges = [b"", b"\x80", b"\xff" * 9 + b"\x7f", b"\xff" * 10 + b"\x01", b"\x01", b"\x02", b"\x04"]
    for _ in range(300):
        good = encode(
            schema,
            {
                name: value_of(f["type"], rng)
                for name, f in zip(names, schema["fields"], strict=True)
            },
        )
        cut = rng.randrange(len(good) + 1)
        payload = rng.choice(
            [
                good[:cut],  # truncated
                good + rng.randbytes(rng.randrange(1, 4)),  # trailing bytes
                good[:cut] + rng.choice(edges) + good[cut:],  # an odd varint spliced in
                bytes(b ^ (1 << rng.randrange(8)) if rng.random() < 0.1 else b for b in good),
                rng.randbytes(rng.randrange(0, 40)),
            ]
        )
        fast, reference = _outcome(flat, payload), _outcome(slow, payload)
        if fast[0] == "ok":
            assert reference[0] == "ok", (payload, fast, reference)
            assert repr(fast[1]) == repr(reference[1]), payload  # repr: nan == nan
        elif reference[0] == "ok":
            assert any(why in fast[1] for why in STRICTER), fast[1]


def _one(t: Any) -> dict[str, Any]:
    return {"type": "record", "name": "R", "fields": [{"name": "f", "type": t}]}


@pytest.mark.parametrize(
    ("t", "payload"),
    [
        ("long", b"\xff" * 9 + b"\x7f"),  # 10 bytes past 64 bits: wrapped, as fastavro does
        ("long", b"\xfe" + b"\xff" * 8 + b"\x03"),  # a 10th byte of 3: its high bit falls off
        ("int", b"\xff\xff\xff\xff\x7f"),
        ("long", b"\xff" * 10 + b"\x01"),  # 11 bytes: refused (fastavro reads on)
        ("long", b"\x80"),
        ("string", b"\x01"),
        ("string", b"\x02\xff"),
        ("boolean", b"\x02"),
        (["null", "double"], b"\x04"),
        (["null", "string"], b"\x01\x02a"),  # a negative union index
        (["null", "double"], b"\x80\x00"),
        ({"type": "enum", "name": "E", "symbols": ["a", "b"]}, b"\x03"),  # index -2
        ({"type": "array", "items": "double"}, b"\xfe\xff\xff\xff\x0f"),
        ({"type": "array", "items": "double"}, b"\x01\x10" + b"\x00" * 9),
        ("double", b"\x00" * 9),
    ],
)
def test_hostile_edge_cases_agree_with_fastavro_or_are_one_of_the_stricter_cases(
    t: Any, payload: bytes
) -> None:
    schema = _one(t)
    flat = flat_reader(schema)
    assert flat is not None
    parsed = fastavro.parse_schema(schema)
    fast = _outcome(flat, payload)
    reference = _outcome(
        lambda p: list(fastavro.schemaless_reader(io.BytesIO(p), parsed, None).values()), payload
    )
    if fast[0] == "ok":
        assert reference == fast
    elif reference[0] == "ok":
        assert any(why in fast[1] for why in STRICTER), fast[1]
