"""WireReader: Confluent wire-format values into the per-message checks' documents, with a
reason for every value it cannot read; a registry that cannot answer raises, never rejects."""

from __future__ import annotations

import io
import json
import struct
from typing import Any

import fastavro
import httpx2
import pytest
from confluent_kafka.schema_registry import Schema
from confluent_kafka.schema_registry.error import SchemaRegistryError

from streamapp.codec.checks import RejectError
from streamapp.codec.registry import FieldMapping, RegistryUnavailableError, WireReader

EVENT = {
    "type": "record",
    "name": "E",
    "fields": [
        {"name": "event_id", "type": "string"},
        {"name": "a", "type": "double"},
        {"name": "b", "type": ["null", "float"], "default": None},
    ],
}


class Registry:
    """A stand-in registry client: schemas by id, a switch to make it unreachable, and a
    count of lookups (the reader must cache by id)."""

    def __init__(self, schemas: dict[int, dict[str, Any]]) -> None:
        self.schemas = schemas
        self.up = True
        self.lookups = 0

    def get_schema(self, schema_id: int) -> Schema:
        self.lookups += 1
        if not self.up:
            raise httpx2.ConnectError("Connection refused")
        if schema_id not in self.schemas:
            raise SchemaRegistryError(404, 40403, "not found")
        return Schema(json.dumps(self.schemas[schema_id]), "AVRO")


def wire(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue()


def reader(registry: Registry) -> WireReader:
    return WireReader(registry, "avro", FieldMapping.of(["a", "b"]), "features")


def test_records_become_documents_and_schemas_are_fetched_once_per_id() -> None:
    registry = Registry({1: EVENT})
    values = [wire(1, EVENT, {"event_id": f"e{i}", "a": float(i), "b": None}) for i in range(50)]
    docs = reader(registry).read(values)
    assert docs[3] == {"event_id": "e3", "features": [3.0, None]}
    assert registry.lookups == 1


def test_an_evolved_schema_maps_by_field_name_not_position() -> None:
    evolved = {**EVENT, "fields": [*reversed(EVENT["fields"]), {"name": "c", "type": "string"}]}
    registry = Registry({1: EVENT, 2: evolved})
    value = wire(2, evolved, {"event_id": "e", "a": 1.5, "b": 2.5, "c": "x"})
    assert reader(registry).read([value]) == [{"event_id": "e", "features": [1.5, 2.5]}]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b'{"event_id": "x"}', "wire_format"),
        (b"\x00\x00", "wire_format"),
        (None, "decode"),
        (b"\x00\x00\x00\x00\x09" + b"\x02e", "unknown_schema"),
        (b"\x00\x00\x00\x00\x01\x02e", "decode"),
        (b"\x00\x00\x00\x00\x03\x02e", "schema_mapping"),
        (b"\x00" + b"\x00" * 300_000, "oversized"),
    ],
)
def test_bad_wire_bytes_are_rejected_with_their_reason(value: bytes | None, reason: str) -> None:
    odd = {"type": "record", "name": "O", "fields": [{"name": "event_id", "type": "long"}]}
    [out] = reader(Registry({1: EVENT, 3: odd})).read([value])
    assert isinstance(out, RejectError) and out.reason == reason


def test_an_unreachable_registry_raises_instead_of_rejecting_and_then_recovers() -> None:
    registry = Registry({1: EVENT})
    wire_reader = reader(registry)
    value = wire(1, EVENT, {"event_id": "e", "a": 1.0, "b": 2.0})
    registry.up = False
    with pytest.raises(RegistryUnavailableError, match="ConnectError"):
        wire_reader.read([value])
    registry.up = True
    assert wire_reader.read([value]) == [{"event_id": "e", "features": [1.0, 2.0]}]
    registry.up = False  # a known id needs no registry
    assert wire_reader.read([value]) == [{"event_id": "e", "features": [1.0, 2.0]}]


def test_the_batch_shortcut_and_the_per_message_checks_agree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamapp.codec import Codec
    from tests.fakes import DEFAULT_TIMESTAMP_MS, FakeMessage

    now_s = DEFAULT_TIMESTAMP_MS / 1000
    records = [
        {"event_id": "ok", "a": 1.0, "b": 2.0},
        {"event_id": "ts", "a": 1.0, "b": 2.0, "ts": now_s - 5},
        {"event_id": "future", "a": 1.0, "b": 2.0, "ts": now_s + 3600},
        {"event_id": "negative", "a": 1.0, "b": 2.0, "ts": -1.0},
        {"event_id": "missing", "a": 1.0, "b": None},
        {"event_id": "nan", "a": float("nan"), "b": 2.0},
        {"event_id": "huge", "a": 1e300, "b": 2.0},
        {"event_id": "", "a": 1.0, "b": 2.0},
    ]
    schema = {
        **EVENT,
        "fields": [*EVENT["fields"], {"name": "ts", "type": ["null", "double"], "default": None}],
    }
    msgs = [
        FakeMessage("features", 0, i, value=wire(1, schema, {"ts": None, **r}))
        for i, r in enumerate(records)
    ]

    def decode() -> tuple[Any, ...]:
        codec = Codec(["a", "b"], ["x", "y"])
        codec.features_wire = reader(Registry({1: schema}))
        batch = codec.decode_batch(msgs)
        features = batch.features
        return (
            list(features.ids),
            features.X.tolist(),
            features.ts.tolist(),
            [(d.source.offset, d.reason.value) for d in batch.dead_letters],
        )

    shortcut = decode()
    monkeypatch.setattr(Codec, "_wire_batch", lambda *args: set())
    assert decode() == shortcut
    assert shortcut[0] == ["ok", "ts"]
    assert sorted(shortcut[3]) == [
        (2, "ts_out_of_range"),
        (3, "ts_out_of_range"),
        (4, "missing"),
        (5, "non_finite"),
        (6, "value_range"),
        (7, "schema"),
    ]


def test_features_side_by_side_come_as_one_run_of_bytes_and_decode_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from streamapp.codec import Codec
    from tests.fakes import DEFAULT_TIMESTAMP_MS, FakeMessage

    now_s = DEFAULT_TIMESTAMP_MS / 1000
    schema = {
        "type": "record",
        "name": "P",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "ts", "type": ["null", "double"], "default": None},
            {"name": "a", "type": "double"},
            {"name": "b", "type": "double"},
        ],
    }
    records = [
        {"event_id": "ok", "ts": None, "a": 1.0, "b": -2.5},
        {"event_id": "ts", "ts": now_s - 5, "a": 3.0, "b": 4.0},
        {"event_id": "future", "ts": now_s + 3600, "a": 1.0, "b": 2.0},
        {"event_id": "inf", "ts": None, "a": float("inf"), "b": 2.0},
        {"event_id": "", "ts": None, "a": 1.0, "b": 2.0},
    ]
    values = [wire(1, schema, r) for r in records]
    [doc, *_] = reader(Registry({1: schema})).read(values)
    assert isinstance(doc, dict) and type(doc["features"]) is bytes  # the batch's shortcut
    msgs = [FakeMessage("features", 0, i, value=v) for i, v in enumerate(values)]

    def decode() -> tuple[Any, ...]:
        codec = Codec(["a", "b"], ["x", "y"])
        codec.features_wire = reader(Registry({1: schema}))
        batch = codec.decode_batch(msgs)
        return (
            list(batch.features.ids),
            batch.features.X.tolist(),
            batch.features.ts.tolist(),
            sorted((d.source.offset, d.reason.value) for d in batch.dead_letters),
        )

    shortcut = decode()
    monkeypatch.setattr(Codec, "_wire_batch", lambda *args: set())
    assert decode() == shortcut
    assert shortcut[:2] == (["ok", "ts"], [[1.0, -2.5], [3.0, 4.0]])
    assert shortcut[3] == [(2, "ts_out_of_range"), (3, "non_finite"), (4, "schema")]


def test_protobuf_records_map_by_name_and_a_proto_text_schema_says_why_not() -> None:
    import base64

    from streamapp.codec.protobuf_wire import twin_classes

    event = twin_classes()["features"]
    descriptor = event.DESCRIPTOR.file.serialized_pb
    schemas = {
        1: Schema(base64.b64encode(descriptor).decode(), "PROTOBUF"),
        2: Schema('syntax = "proto3"; message E { string event_id = 1; }', "PROTOBUF"),
    }

    class ProtoRegistry(Registry):
        def get_schema(self, schema_id: int) -> Schema:
            return schemas[schema_id]

    wire_reader = WireReader(
        ProtoRegistry({}), "protobuf", FieldMapping.of(["a", "b"], array="features"), "features"
    )
    body = event(event_id="e", features=[1.0, 2.0]).SerializeToString()
    with_ts = event(event_id="t", ts=5.0, features=[3.0, 4.0]).SerializeToString()
    out = wire_reader.read(
        [
            b"\x00\x00\x00\x00\x01\x00" + body,  # message index [0], the short form
            b"\x00\x00\x00\x00\x01\x02\x00" + with_ts,  # [0] written out
            b"\x00\x00\x00\x00\x01\x02\x08" + body,  # message 4 of a file with one
            b"\x00\x00\x00\x00\x02\x00" + body,
        ]
    )
    assert out[:2] == [
        {"event_id": "e", "features": [1.0, 2.0]},
        {"event_id": "t", "ts": 5.0, "features": [3.0, 4.0]},
    ]
    assert [r.reason.value for r in out[2:] if isinstance(r, RejectError)] == [
        "decode",
        "schema_mapping",
    ]


def _proto_importing_timestamp() -> str:
    import base64

    from google.protobuf import descriptor_pb2

    file = descriptor_pb2.FileDescriptorProto(
        name="e.proto", package="p", syntax="proto3", dependency=["google/protobuf/timestamp.proto"]
    )
    message = file.message_type.add(name="E")
    message.field.add(name="event_id", number=1, type=9, label=1)
    message.field.add(name="a", number=2, type=1, label=1)
    message.field.add(name="b", number=3, type=1, label=1)
    message.field.add(
        name="created", number=4, type=11, label=1, type_name=".google.protobuf.Timestamp"
    )
    return base64.b64encode(file.SerializeToString()).decode()


@pytest.mark.parametrize(
    ("fmt", "schema", "why"),
    [
        (  # a named type from a Confluent schema reference: fastavro's UnknownType
            "avro",
            Schema(
                json.dumps(
                    {
                        **EVENT,
                        "fields": [*EVENT["fields"], {"name": "m", "type": "com.acme.Money"}],
                    }
                ),
                "AVRO",
            ),
            "UnknownType",
        ),
        ("avro", Schema('{"type": "record", "name": ', "AVRO"), "JSONDecodeError"),
        ("protobuf", Schema(_proto_importing_timestamp(), "PROTOBUF"), "TypeError"),
    ],
)
def test_a_schema_the_reader_cannot_parse_is_a_mapping_reject_and_refused_at_start(
    fmt: Any, schema: Schema, why: str
) -> None:
    from types import SimpleNamespace

    from streamapp.errors import ConfigError

    class Fixed(Registry):
        def get_schema(self, schema_id: int) -> Schema:
            self.lookups += 1
            return schema

        def get_latest_version(self, subject: str) -> Any:
            return SimpleNamespace(schema=schema, version=2, schema_id=7)

    registry = Fixed({})
    wire_reader = WireReader(registry, fmt, FieldMapping.of(["a", "b"]), "features")
    out = wire_reader.read([b"\x00\x00\x00\x00\x07\x00\x02x"] * 3)
    assert all(isinstance(r, RejectError) and r.reason == "schema_mapping" for r in out)
    assert f"schema id 7 cannot be read: {why}" in str(out[0])
    assert registry.lookups == 1  # kept: the next record of that id needs no registry
    with pytest.raises(ConfigError, match=f"version 2 \\(id 7\\) cannot be read: {why}") as err:
        wire_reader.check_latest("features")
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (SchemaRegistryError(404, 40403, "Schema not found"), "unknown_schema"),
        # a 404 that is not the registry's (a proxy, a wrong url path): an outage, not bad input
        (SchemaRegistryError(404, -1, "Unknown Schema Registry Error: b'<html>'"), "held"),
        (SchemaRegistryError(404, 404, "RESTEASY003210: Could not find resource"), "held"),
        (SchemaRegistryError(401, 40101, "Unauthorized"), "held"),
        (SchemaRegistryError(429, -1, "Too Many Requests"), "held"),
        (SchemaRegistryError(503, 50003, "down"), "held"),
        # an answer that a retry will not change: a dead letter with the reason, not 300 s held
        (SchemaRegistryError(422, 42202, "Invalid schema id"), "unknown_schema"),
        (json.JSONDecodeError("Expecting value", "<html>", 0), "unknown_schema"),
    ],
)
def test_only_the_registrys_own_answers_reject_and_anything_else_is_an_outage(
    error: Exception, outcome: str
) -> None:
    class Failing(Registry):
        def get_schema(self, schema_id: int) -> Schema:
            raise error

    wire_reader = reader(Failing({}))
    value = b"\x00\x00\x00\x00\x05\x02e"
    if outcome == "held":
        with pytest.raises(RegistryUnavailableError):
            wire_reader.read([value])
        return
    [out] = wire_reader.read([value])
    assert isinstance(out, RejectError) and out.reason == outcome


@pytest.mark.parametrize(
    ("error", "outcome"),
    [
        (SchemaRegistryError(404, 40401, "Subject not found"), "nothing yet"),
        (SchemaRegistryError(404, 40402, "No version 'latest' found"), "nothing yet"),  # Apicurio
        (SchemaRegistryError(404, -1, "Unknown Schema Registry Error: b'<html>'"), "held"),
        (SchemaRegistryError(502, -1, "Bad Gateway"), "held"),
        (SchemaRegistryError(400, 40001, "bad request"), "refused"),
        (ValueError("Expecting value: line 1 column 1 (char 0)"), "refused"),
    ],
)
def test_the_start_check_says_nothing_registered_only_when_the_registry_says_so(
    error: Exception, outcome: str
) -> None:
    from streamapp.errors import ConfigError

    class Failing(Registry):
        def get_latest_version(self, subject: str) -> Any:
            raise error

    wire_reader = reader(Failing({}))
    if outcome == "nothing yet":
        assert wire_reader.check_latest("features") is None
    elif outcome == "held":
        with pytest.raises(RegistryUnavailableError):
            wire_reader.check_latest("features")
    else:
        with pytest.raises(ConfigError, match="features-value") as err:
            wire_reader.check_latest("features")
        assert "\n" not in str(err.value)


def test_each_protobuf_message_a_record_names_is_checked_against_the_mapping() -> None:
    import base64

    from google.protobuf import descriptor_pb2

    file = descriptor_pb2.FileDescriptorProto(name="f.proto", package="q", syntax="proto3")
    good = file.message_type.add(name="Good")
    other = file.message_type.add(name="Other")
    for message, field in ((good, "a"), (other, "zzz")):
        message.field.add(name="event_id", number=1, type=9, label=1)
        message.field.add(name=field, number=2, type=1, label=1)
    schema = Schema(base64.b64encode(file.SerializeToString()).decode(), "PROTOBUF")

    class ProtoRegistry(Registry):
        def get_schema(self, schema_id: int) -> Schema:
            return schema

    wire_reader = WireReader(ProtoRegistry({}), "protobuf", FieldMapping.of(["a"]), "features")
    body = b"\x0a\x01x\x11" + struct.pack("<d", 2.0)  # event_id "x", a 2.0
    out = wire_reader.read(
        [
            b"\x00\x00\x00\x00\x01\x00" + body,  # [0]: Good
            b"\x00\x00\x00\x00\x01\x02\x02" + body,  # [1]: Other, whose fields do not map
            b"\x00\x00\x00\x00\x01\x02\x02" + body,  # the same, from the cache
            b"\x00\x00\x00\x00\x01\x02\x01" + body,  # [-1]: no message (not the last one)
            b"\x00\x00\x00\x00\x01\x02\x04" + body,  # [2]: past the last
            b"\x00\x00\x00\x00\x01" + b"\xff" * 200_000 + b"\x01",  # an endless varint
        ]
    )
    assert out[0] == {"event_id": "x", "features": [2.0]}
    reasons = [r.reason.value if isinstance(r, RejectError) else r for r in out[1:]]
    assert reasons == ["schema_mapping", "schema_mapping", "decode", "decode", "decode"]
    assert "message q.Other does not map" in str(out[1]) and "'a'" in str(out[2])
    assert "longer than 10 bytes" in str(out[5])


def test_an_id_the_registry_does_not_know_is_asked_once_per_ttl_not_once_per_message() -> None:
    now = [0.0]
    registry = Registry({1: EVENT})
    wire_reader = WireReader(
        registry, "avro", FieldMapping.of(["a", "b"]), "features", clock=lambda: now[0]
    )
    garbage = b"\x00\x12\x34\x56\x78" + b"\x00" * 20
    out = wire_reader.read([garbage] * 500)
    assert {r.reason.value for r in out if isinstance(r, RejectError)} == {"unknown_schema"}
    assert len(out) == 500 and registry.lookups == 1
    now[0] = 11.0  # past the ttl: the producer may have registered it since
    registry.schemas[0x12345678] = EVENT
    value = b"\x00\x12\x34\x56\x78" + wire(1, EVENT, {"event_id": "e", "a": 1.0, "b": None})[5:]
    assert wire_reader.read([value]) == [{"event_id": "e", "features": [1.0, None]}]
    assert registry.lookups == 2


@pytest.mark.parametrize(
    "logical",
    [
        {"type": "int", "logicalType": "date"},
        {"type": "int", "logicalType": "time-millis"},
        {"type": "long", "logicalType": "time-micros"},
        {"type": "bytes", "logicalType": "decimal", "precision": 4, "scale": 2},
        ["null", {"type": "int", "logicalType": "date"}],
    ],
)
def test_a_feature_with_a_logical_type_other_than_a_timestamp_is_refused_at_start(
    logical: Any,
) -> None:
    from types import SimpleNamespace

    from streamapp.errors import ConfigError

    schema = {**EVENT, "fields": [EVENT["fields"][0], {"name": "a", "type": logical}]}

    class Latest(Registry):
        def get_latest_version(self, subject: str) -> Any:
            return SimpleNamespace(
                schema=Schema(json.dumps(schema), "AVRO"), version=1, schema_id=1
            )

    wire_reader = WireReader(Latest({}), "avro", FieldMapping.of(["a"]), "features")
    with pytest.raises(ConfigError, match="feature field 'a' is other, not a number"):
        wire_reader.check_latest("features")


def test_a_local_timestamp_is_not_taken_as_the_event_time() -> None:
    from streamapp.codec.registry import record_fields

    fields = [
        {"name": "t", "type": {"type": "long", "logicalType": "timestamp-millis"}},
        {"name": "l", "type": {"type": "long", "logicalType": "local-timestamp-millis"}},
    ]
    kinds = record_fields("AVRO", json.dumps({"type": "record", "name": "R", "fields": fields}))
    assert kinds == {"t": ("timestamp", False), "l": ("other", False)}
