"""Each Avro twin in ``schemas/`` describes the same fields as its JSON Schema: the same
names at every level (records, and the records inside arrays, maps and unions), null allowed
exactly where the JSON Schema allows it or the field is optional (default null), numbers as
numbers, strings as strings, enums with the same symbols, and an object keyed by data
(``additionalProperties``) as a map whose doc names the keys the JSON Schema requires."""

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


_PRIMITIVES = {"null", "boolean", "int", "long", "float", "double", "bytes", "string"}


class Names:
    """The named types of one Avro schema, as they are defined (a later use by name,
    such as ``"type": "Changes"``, means the definition)."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.defined: dict[str, dict[str, Any]] = {}

    def resolve(self, t: Any) -> Any:
        """``t`` with a named reference replaced by its definition (defining any names)."""
        if isinstance(t, str):
            if t in _PRIMITIVES:
                return t
            return self.defined.get(t) or self.defined[f"{self.namespace}.{t}"]
        if isinstance(t, dict) and t.get("type") in ("record", "enum") and "name" in t:
            self.defined[t["name"]] = t
            self.defined[f"{t.get('namespace', self.namespace)}.{t['name']}"] = t
        return t


def branches(t: Any, names: Names) -> list[Any]:
    """The branches of a field's type (one, unless a union), named references resolved."""
    return [names.resolve(b) for b in (t if isinstance(t, list) else [t])]


def kind(t: Any) -> str:
    return t if isinstance(t, str) else str(t["type"])


def avro_types(t: Any, names: Names | None = None) -> set[str]:
    """The Avro type names a field's type allows (a union: each branch)."""
    return {kind(b) for b in branches(t, names or Names(""))}


def resolve_json(spec: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with a local ``$ref`` (``#/$defs/...``) merged in."""
    ref = spec.get("$ref")
    if ref is None:
        return spec
    target = root
    for part in ref.removeprefix("#/").split("/"):
        target = target[part]
    return {**target, **{k: v for k, v in spec.items() if k != "$ref"}}


def json_types(spec: dict[str, Any]) -> set[str]:
    if "enum" in spec:
        return {"string"} | ({"null"} if None in spec["enum"] else set())
    if "oneOf" in spec:  # feature events: the Avro twin takes one form (the list)
        return set().union(*(json_types(alt) for alt in spec["oneOf"]))
    t = spec.get("type")
    return {t} if isinstance(t, str) else set(t or [])


def compare(
    json_schema: dict[str, Any],
    avro_record: dict[str, Any],
    path: str,
    root: dict[str, Any] | None = None,
    names: Names | None = None,
) -> list[str]:
    """What differs between a JSON Schema object and an Avro record, at every level:
    names, nullability and defaults, type families, and below them nested records, maps
    (an object keyed by data: ``additionalProperties``) and arrays."""
    root = json_schema if root is None else root
    names = names or Names(avro_record.get("namespace", ""))
    names.resolve(avro_record)
    problems = []
    props = json_schema.get("properties", {})
    fields = {f["name"]: f for f in avro_record["fields"]}
    required = set(json_schema.get("required", []))
    if set(props) | required != set(fields):
        problems.append(f"{path}: JSON {sorted(set(props) | required)} vs Avro {sorted(fields)}")
    for name in [n for n in fields if n in props]:  # in Avro order: names defined first
        spec, field = resolve_json(props[name], root), fields[name]
        allowed = avro_types(field["type"], names)
        nullable = "null" in allowed
        optional = name not in required
        if nullable != (optional or "null" in json_types(spec)):
            problems.append(f"{path}.{name}: required={not optional}, Avro nullable={nullable}")
        if optional and field.get("default", "absent") is not None:
            problems.append(f"{path}.{name}: an optional field needs default null")
        if not optional and "default" in field:
            problems.append(f"{path}.{name}: a required field has a default")
        if "map" in allowed:  # names the JSON Schema requires must be in the doc
            missing = sorted(n for n in spec.get("required", []) if n not in field.get("doc", ""))
            if missing:
                problems.append(f"{path}.{name}: the map's doc does not name {missing}")
        problems += compare_type(spec, field["type"], f"{path}.{name}", root, names)
    return problems


def compare_type(
    spec: dict[str, Any], avro: Any, path: str, root: dict[str, Any], names: Names
) -> list[str]:
    """The type families of ``spec`` and the Avro type ``avro`` (nullability is the
    caller's), and what lies below them."""
    problems = []
    wanted = set().union(*(_JSON_TO_AVRO[t] for t in json_types(spec) if t != "null"))
    for branch in branches(avro, names):
        k = kind(branch)
        if k == "null":
            continue
        if k not in wanted:
            problems.append(f"{path}: Avro {k} for JSON {sorted(json_types(spec))}")
        elif "oneOf" in spec:  # the alternative this branch takes
            families = {j for j, avro_kinds in _JSON_TO_AVRO.items() if k in avro_kinds}
            [alt] = [a for a in spec["oneOf"] if json_types(a) & families]
            problems += compare_type(alt, branch, path, root, names)
        elif k == "record":
            problems += compare(spec, branch, path, root, names)
        elif k == "enum":
            symbols = [s for s in spec.get("enum", []) if s is not None]
            if symbols and symbols != branch["symbols"]:
                problems.append(f"{path}: enum {branch['symbols']} for JSON {symbols}")
        elif k == "array":
            problems += compare_inner(spec.get("items"), branch["items"], f"{path}[]", root, names)
        elif k == "map":
            if spec.get("properties"):
                problems.append(f"{path}: a map for an object with fixed properties")
            extra = spec.get("additionalProperties")
            problems += compare_inner(extra, branch["values"], f"{path}{{}}", root, names)
    return problems


def compare_inner(spec: Any, avro: Any, path: str, root: dict[str, Any], names: Names) -> list[str]:
    """Array items or map values: described by the JSON Schema, null where it allows."""
    if not isinstance(spec, dict):
        return [f"{path}: the JSON Schema leaves it untyped ({spec!r})"]
    spec = resolve_json(spec, root)
    problems = compare_type(spec, avro, path, root, names)
    if ("null" in avro_types(avro, names)) != ("null" in json_types(spec)):
        problems.append(f"{path}: null allowed differs")
    return problems


@pytest.mark.parametrize("name", TWINS)
def test_the_avro_twin_describes_the_same_fields_as_the_json_schema(name: str) -> None:
    assert compare(load_schema(name), load_avro_schema(name), name) == []


def test_the_twins_cover_the_wire_formats_outputs_and_inputs() -> None:
    assert {"prediction", "dead-letter", "feature-event", "feedback"} <= set(TWINS)
    assert {"regression-prediction", "regression-feedback"} <= set(TWINS)


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
    targets = record_fields("AVRO", json.dumps(load_avro_schema("regression-feedback")))
    assert FieldMapping.of(["a", "b"], numeric_label=True).problems(targets, "feedback") == []


def _field(record: dict[str, Any], *path: str) -> dict[str, Any]:
    """The field at ``path`` of ``record``, through unions, arrays and maps of records."""
    field = next(f for f in record["fields"] if f["name"] == path[0])
    if len(path) == 1:
        return field
    inner = field["type"]
    while not (isinstance(inner, dict) and inner["type"] == "record"):
        if isinstance(inner, list):
            inner = next(b for b in inner if b != "null")
        else:
            inner = inner.get("items") or inner["values"]
    return _field(inner, *path[1:])


def _drop(path: tuple[str, ...]) -> Any:
    def mutate(avro: dict[str, Any]) -> None:
        parent = _field(avro, *path[:-1])["type"] if len(path) > 1 else avro
        while not (isinstance(parent, dict) and parent["type"] == "record"):
            parent = next(b for b in parent if b != "null") if isinstance(parent, list) else parent
        parent["fields"] = [f for f in parent["fields"] if f["name"] != path[-1]]

    return mutate


def _set(path: tuple[str, ...], **changes: Any) -> Any:
    def mutate(avro: dict[str, Any]) -> None:
        _field(avro, *path).update(changes)

    return mutate


DRIFTED_TWINS = {
    "a nested optional field gone": _drop(("conformal", "recent", "unbounded")),
    "a named type's field gone (both detectors)": _drop(("detectors", "adwin", "total")),
    "map values of another family": _set(
        ("prediction", "counts"), type={"type": "map", "values": "string"}
    ),
    "array items of another family": _set(
        ("counts", "sum"), type={"type": "array", "items": "long"}
    ),
    "a nested array's items nullable": _set(
        ("performance", "confusion"),
        type=["null", {"type": "array", "items": {"type": "array", "items": ["null", "long"]}}],
    ),
    "map values that cannot be null": _set(
        ("model", "candidates", "selection", "accuracy"), type={"type": "map", "values": "double"}
    ),
    "an enum with other symbols": _set(
        ("guard", "state"), type={"type": "enum", "name": "S", "symbols": ["adapted", "scratch"]}
    ),
    "an optional number made required": _set(("performance", "accuracy"), type="double"),
    "a map whose doc drops a required count": _set(("labels",), doc="joined, late"),
    "an object keyed by name as a map": _set(
        ("window",), type={"type": "map", "values": ["null", "double"]}
    ),
}


@pytest.mark.parametrize("mutation", DRIFTED_TWINS)
def test_a_drift_report_twin_that_drifts_is_caught(mutation: str) -> None:
    avro = load_avro_schema("drift-report")
    DRIFTED_TWINS[mutation](avro)
    assert compare(load_schema("drift-report"), avro, "drift-report") != []


DRIFTED_REGRESSION_TWINS = {
    "the value gone": _drop(("value",)),
    "the interval's coverage gone": _drop(("interval", "coverage")),
    "an unbounded end that cannot be null": _set(("interval", "low"), type="double"),
    "the value as a string": _set(("value",), type="string"),
    "the interval required": _set(("interval",), default="absent"),
}


@pytest.mark.parametrize("mutation", DRIFTED_REGRESSION_TWINS)
def test_a_regression_prediction_twin_that_drifts_is_caught(mutation: str) -> None:
    avro = load_avro_schema("regression-prediction")
    DRIFTED_REGRESSION_TWINS[mutation](avro)
    assert compare(load_schema("regression-prediction"), avro, "regression-prediction") != []
