"""Each Avro twin in ``schemas/`` describes the same fields as its JSON Schema: the same
names at every level, null allowed exactly where the JSON Schema allows it or the field is
optional (default null), numbers as numbers, strings as strings."""

from __future__ import annotations

from typing import Any

import pytest

from streamapp.codec.avro_out import load_avro_schema
from streamapp.codec.registry import record_fields
from streamapp.schemas import load_schema, schema_dir

TWINS = sorted(p.name.removesuffix(".avsc") for p in schema_dir().glob("*.avsc"))

_JSON_TO_AVRO = {
    "string": {"string", "enum"},
    "number": {"double", "float"},
    "integer": {"long", "int"},
    "boolean": {"boolean"},
    "object": {"record", "map"},
    "array": {"array"},
}


def avro_types(t: Any) -> set[str]:
    """The Avro type names a field's type allows (a union: each branch)."""
    if isinstance(t, list):
        return set().union(*(avro_types(b) for b in t))
    if isinstance(t, dict):
        return {t["type"]} if isinstance(t["type"], str) else avro_types(t["type"])
    return {t}


def json_types(spec: dict[str, Any]) -> set[str]:
    if "enum" in spec:
        return {"string"}
    if "oneOf" in spec:  # feature events: the Avro twin takes the list form
        return {"array"}
    t = spec.get("type")
    return {t} if isinstance(t, str) else set(t or [])


def compare(json_schema: dict[str, Any], avro_record: dict[str, Any], path: str) -> list[str]:
    problems = []
    props = json_schema.get("properties", {})
    fields = {f["name"]: f for f in avro_record["fields"]}
    if set(props) != set(fields):
        problems.append(f"{path}: JSON {sorted(props)} vs Avro {sorted(fields)}")
    required = set(json_schema.get("required", []))
    for name in set(props) & set(fields):
        spec, field = props[name], fields[name]
        allowed = avro_types(field["type"])
        nullable = "null" in allowed
        optional = name not in required
        if nullable != (optional or "null" in json_types(spec)):
            problems.append(f"{path}.{name}: required={not optional}, Avro nullable={nullable}")
        if optional and field.get("default", "absent") is not None:
            problems.append(f"{path}.{name}: an optional field needs default null")
        if not optional and "default" in field:
            problems.append(f"{path}.{name}: a required field has a default")
        wanted = set().union(*(_JSON_TO_AVRO[t] for t in json_types(spec) if t != "null"))
        if not (allowed - {"null"}) <= wanted:
            problems.append(f"{path}.{name}: Avro {sorted(allowed)} for JSON {json_types(spec)}")
        inner = field["type"]
        if isinstance(inner, dict) and inner.get("type") == "record":
            problems += compare(spec, inner, f"{path}.{name}")
    return problems


@pytest.mark.parametrize("name", TWINS)
def test_the_avro_twin_describes_the_same_fields_as_the_json_schema(name: str) -> None:
    assert compare(load_schema(name), load_avro_schema(name), name) == []


def test_the_twins_cover_the_wire_formats_outputs_and_inputs() -> None:
    assert {"prediction", "dead-letter", "feature-event", "feedback"} <= set(TWINS)


def test_a_twin_that_drifts_from_its_json_schema_is_caught() -> None:
    avro = load_avro_schema("prediction")
    avro["fields"] = [f for f in avro["fields"] if f["name"] != "scored_ts"]
    assert compare(load_schema("prediction"), avro, "prediction") != []
    avro = load_avro_schema("prediction")
    avro["fields"][0] = {"name": "event_id", "type": ["null", "string"], "default": None}
    assert compare(load_schema("prediction"), avro, "prediction") != []


def test_the_input_twins_map_onto_a_bundle_by_the_default_mapping() -> None:
    import json

    from streamapp.codec.registry import FieldMapping

    events = record_fields("AVRO", json.dumps(load_avro_schema("feature-event")))
    labels = record_fields("AVRO", json.dumps(load_avro_schema("feedback")))
    assert FieldMapping.of(["a", "b"], array="features").problems(events, "features") == []
    assert FieldMapping.of(["a", "b"]).problems(labels, "feedback") == []
