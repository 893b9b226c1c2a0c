"""Inputs in the Confluent wire format through a real worker, a real broker and a real
Schema Registry (Apicurio): confluent-kafka's own serializers in, every event predicted;
hostile wire bytes dead-lettered with their reasons; a mapping that does not fit stops the
worker before it consumes; a registry outage is held, not dead-lettered."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from confluent_kafka import Consumer, Producer
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.avro import AvroDeserializer, AvroSerializer
from confluent_kafka.schema_registry.json_schema import JSONSerializer
from confluent_kafka.serialization import MessageField, SerializationContext

from streamapp.cli import main
from streamapp.codec import encode_json
from streamapp.codec.avro_in import as_json_document
from streamapp.codec.avro_out import load_avro_schema
from streamapp.drift.history import read_reports
from streamapp.errors import ConfigError
from streamapp.kafka.schema_registry import ApicurioRegistry
from streamapp.scenarios import get_scenario, stream
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, load_schema, produce_raw, read_topic

pytestmark = pytest.mark.integration

FEATURES = get_scenario("digits-shift").feature_names


def event_schema(*, extra: list[dict[str, Any]] | None = None, reverse: bool = False) -> str:
    """The producer's Avro record: event_id, an optional ts, a double per feature."""
    fields: list[dict[str, Any]] = [{"name": n, "type": "double"} for n in FEATURES]
    if reverse:  # a reordered record: the same fields, another order
        fields.reverse()
    head = [
        {"name": "event_id", "type": "string"},
        {"name": "ts", "type": ["null", "double"], "default": None},
    ]
    return json.dumps(
        {
            "type": "record",
            "name": "Event",
            "namespace": "shop",
            "fields": head + fields + (extra or []),
        }
    )


LABEL_SCHEMA = json.dumps(
    {
        "type": "record",
        "name": "Label",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "label", "type": "string"},
            {"name": "ts", "type": "double"},
        ],
    }
)


@pytest.fixture
def client(schema_registry: ApicurioRegistry) -> Iterator[SchemaRegistryClient]:
    """A plain confluent-kafka registry client, as a producer or a reader has one."""
    with SchemaRegistryClient({"url": schema_registry.url}) as registry_client:
        yield registry_client


def read_avro(
    settings: Settings, client: SchemaRegistryClient, topic: str, expected: int
) -> list[tuple[bytes | None, dict[str, Any]]]:
    """``expected`` records of ``topic``, each read by confluent-kafka's AvroDeserializer."""
    deserialize = AvroDeserializer(client)
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"avro-reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "isolation.level": "read_committed",
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, dict[str, Any]]] = []
    deadline = time.monotonic() + 30
    try:
        while len(out) < expected and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.5):
                if msg.error() is None:
                    ctx = SerializationContext(topic, MessageField.VALUE)
                    out.append((msg.key(), deserialize(msg.value(), ctx)))
    finally:
        consumer.close()
    return out


def as_json(doc: dict[str, Any]) -> dict[str, Any]:
    """An Avro record as its JSON twin writes it: an optional field that is null is absent."""
    optional = {"state", "key_size"}
    return {
        k: as_json(v) if isinstance(v, dict) and k != "probabilities" else v
        for k, v in doc.items()
        if not (k in optional and v is None)
    }


def registry_settings(
    make_settings: Callable[..., Settings], registry: ApicurioRegistry, **overrides: object
) -> Settings:
    return make_settings(
        partitions=1,
        **{
            "schema_registry.url": registry.url,
            "schema_registry.features_format": "avro",
            "schema_registry.feedback_format": "avro",
            **overrides,
        },
    )


def flat(doc: dict[str, Any]) -> dict[str, Any]:
    """A scenario feature event as the Avro record: one field per feature."""
    return {
        "event_id": doc["event_id"],
        "ts": doc["ts"],
        **dict(zip(FEATURES, doc["features"], strict=True)),
    }


def produce_avro(
    settings: Settings,
    client: SchemaRegistryClient,
    records: list[tuple[str, str, dict[str, Any]]],
    schemas: dict[str, str] | None = None,
) -> None:
    """``(kind, key, record)`` through confluent-kafka's own AvroSerializer."""
    schemas = {"features": event_schema(), "feedback": LABEL_SCHEMA, **(schemas or {})}
    serializers = {kind: AvroSerializer(client, s) for kind, s in schemas.items()}
    topics = {"features": settings.topics.features, "feedback": settings.topics.feedback}
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True}
    )
    for kind, key, record in records:
        ctx = SerializationContext(topics[kind], MessageField.VALUE)
        producer.produce(topics[kind], serializers[kind](record, ctx), key.encode())
    assert producer.flush(30) == 0


def scenario_records(n: int) -> list[tuple[str, str, dict[str, Any]]]:
    out = []
    for r in stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.2):
        out.append((r.kind, r.key, flat(r.value) if r.kind == "features" else r.value))
    return out


def test_avro_inputs_are_all_predicted_and_bad_wire_bytes_dead_lettered(
    make_settings: Callable[..., Settings],
    schema_registry: ApicurioRegistry,
    client: SchemaRegistryClient,
) -> None:
    settings = registry_settings(
        make_settings,
        schema_registry,
        # batches of 50 and a report per 40 events: several reports, the final one partial
        **{
            "schema_registry.output_format": "avro",
            "drift.window_events": 40,
            "batch.max_size": 50,
        },
    )
    records = scenario_records(300)
    n_events = sum(kind == "features" for kind, _, _ in records)
    produce_avro(settings, client, records[:100])
    # a second, compatible version mid-stream: an added optional field, the fields reordered
    evolved = event_schema(
        extra=[{"name": "shop", "type": ["null", "string"], "default": None}], reverse=True
    )
    produce_avro(settings, client, records[100:], {"features": evolved})

    # hostile wire bytes, each with the reason it must be dead-lettered with
    topic = settings.topics.features
    good = AvroSerializer(client, event_schema())(
        flat({"event_id": "x", "ts": 1.0, "features": [0.0] * 64}),
        SerializationContext(topic, MessageField.VALUE),
    )
    unmappable_id = client.register_schema(
        f"other-{topic}-value",
        Schema(
            json.dumps(
                {
                    "type": "record",
                    "name": "Odd",
                    "fields": [
                        {"name": "event_id", "type": "string"},
                        {"name": "px00", "type": "string"},
                    ],
                }
            ),
            "AVRO",
        ),
    )
    hostile = {
        b"json": (b'{"event_id": "j", "features": []}', "wire_format"),
        b"short": (b"\x00\x00\x01", "wire_format"),
        b"unknown-id": (b"\x00\x00\x0f\x42\x40" + good[5:], "unknown_schema"),
        b"truncated": (good[:40], "decode"),
        b"unmappable": (
            b"\x00" + unmappable_id.to_bytes(4, "big") + b"\x02e\x02x",
            "schema_mapping",
        ),
    }
    produce_raw(settings, [(topic, key, value) for key, (value, _) in hostile.items()])

    with Worker(settings) as worker:
        worker.run(count=len(records) + len(hostile), timeout=90)

    # the outputs, as a downstream team reads them: a plain AvroDeserializer consumer
    predictions = read_avro(settings, client, settings.topics.predictions, n_events)
    ids = Counter(doc["event_id"] for _, doc in predictions)
    assert set(ids) == {r["event_id"] for kind, _, r in records if kind == "features"}
    assert max(ids.values()) == 1
    for _, doc in predictions:
        assert_valid("prediction", as_json(doc))
    dead = read_avro(settings, client, settings.topics.dead_letter, len(hostile))
    assert len(dead) == len(hostile)
    for key, doc in dead:
        assert_valid("dead-letter", as_json(doc))
        value, reason = hostile[key or b""]
        assert doc["error"]["type"] == reason, (key, doc["error"])
        assert doc["payload_sha256"] == hashlib.sha256(value).hexdigest()  # the raw bytes kept
    n_labels = sum(kind == "feedback" for kind, _, _ in records)
    assert worker.pipeline.stats.feedback_received == n_labels  # Avro feedback read too

    # drift reports: registered under <drift topic>-value, every report read back (the
    # final partial window's included), each valid as its JSON twin, together counting
    # every event, the last one equal to what the worker reported
    drift = settings.topics.drift
    registered = json.loads(client.get_latest_version(f"{drift}-value").schema.schema_str)
    twin = load_avro_schema("drift-report")
    assert (registered["name"], [f["name"] for f in registered["fields"]]) == (
        twin["name"],
        [f["name"] for f in twin["fields"]],
    )
    last = worker.last_drift_report()
    assert last is not None and last["report_seq"] >= 3
    reports = [doc for _, doc in read_avro(settings, client, drift, last["report_seq"])]
    assert sorted(r["report_seq"] for r in reports) == list(range(1, last["report_seq"] + 1))
    as_written = sorted(
        (as_json_document(r, load_schema("drift-report")) for r in reports),
        key=lambda r: r["report_seq"],
    )
    for report in as_written:
        assert_valid("drift-report", report)
    assert sum(r["window"]["events"] for r in as_written) == n_events
    assert as_written[-1] == json.loads(encode_json(last))
    # and `streamapp report --from-topic` reads them (writer schemas from the registry)
    rendered = read_reports(settings, drift)
    assert sorted(rendered, key=lambda r: r["report_seq"]) == as_written


def test_a_mapping_that_does_not_fit_stops_the_worker_before_it_consumes(
    make_settings: Callable[..., Settings], schema_registry: ApicurioRegistry
) -> None:
    settings = registry_settings(
        make_settings,
        schema_registry,
        **{
            "schema_registry.feedback_format": "json",
            "schema_registry.feature_fields": {"px05": "pixel_5"},
        },
    )
    with SchemaRegistryClient({"url": schema_registry.url}) as client:
        client.register_schema(f"{settings.topics.features}-value", Schema(event_schema(), "AVRO"))
    worker = Worker(settings)
    with pytest.raises(ConfigError, match=r"feature fields missing: 'pixel_5'"):
        worker.start()
    assert worker._consumer is None  # nothing was consumed
    worker.close()


def test_json_schema_input_is_predicted(
    make_settings: Callable[..., Settings],
    schema_registry: ApicurioRegistry,
    client: SchemaRegistryClient,
) -> None:
    settings = registry_settings(
        make_settings,
        schema_registry,
        **{
            "schema_registry.features_format": "json-schema",
            "schema_registry.feedback_format": "json",
            "schema_registry.features_field": "pixels",
        },
    )
    schema = json.dumps(
        {
            "$schema": "http://json-schema.org/draft-07/schema#",
            "title": "Event",
            "type": "object",
            "properties": {
                "event_id": {"type": "string"},
                "ts": {"type": "number"},
                "pixels": {"type": "array", "items": {"type": "number"}},
            },
            "required": ["event_id", "pixels"],
        }
    )
    serialize = JSONSerializer(schema, client)
    topic = settings.topics.features
    ctx = SerializationContext(topic, MessageField.VALUE)
    events = [
        r.value
        for r in stream(get_scenario("digits-shift"), 50, rate=1000, label_delay_s=0.2)
        if r.kind == "features"
    ]
    produce_raw(
        settings,
        [
            (
                topic,
                e["event_id"].encode(),
                serialize({"event_id": e["event_id"], "ts": e["ts"], "pixels": e["features"]}, ctx),
            )
            for e in events
        ],
    )
    with Worker(settings) as worker:
        worker.run(count=len(events), timeout=60)
    predictions = read_topic(settings, settings.topics.predictions, expected=len(events))
    assert sorted(d["event_id"] for _, d in predictions) == sorted(e["event_id"] for e in events)


def test_a_registry_outage_is_held_not_dead_lettered_and_exactly_once_holds(
    make_settings: Callable[..., Settings],
    schema_registry: ApicurioRegistry,
    client: SchemaRegistryClient,
    caplog: pytest.LogCaptureFixture,
) -> None:
    secret = "s3cret-registry-password"
    settings = registry_settings(
        make_settings,
        schema_registry,
        **{
            "schema_registry.feedback_format": "json",
            "schema_registry.basic_auth_user_info": f"streamapp:{secret}",
            "delivery.processing_guarantee": "exactly-once",
        },
    )
    events = [r for r in scenario_records(240) if r[0] == "features"]
    first, second = events[: len(events) // 2], events[len(events) // 2 :]
    produce_avro(settings, client, first)
    # the producer moves to a new version while the registry is up; the worker has not
    # seen its id when the registry goes away, so it must ask and cannot
    evolved = AvroSerializer(client, event_schema(reverse=True))
    topic = settings.topics.features
    ctx = SerializationContext(topic, MessageField.VALUE)
    later = [(topic, key.encode(), evolved(record, ctx)) for _, key, record in second]

    with Worker(settings) as worker:
        worker.run(count=len(first), timeout=60)
        schema_registry.stop()
        try:
            produce_raw(settings, later)
            worker.run(timeout=2.5)
            hold = worker.registry_hold
            assert hold.down and hold.outages == 1 and hold.holds >= 2
            assert worker.pipeline.stats.events_scored == len(first)  # held, not scored
            assert not worker.pipeline.stats.dead_letters  # nothing valid dead-lettered
        finally:
            schema_registry.start()
        worker.run(count=len(second), timeout=60)
        assert not worker.registry_hold.down
        metrics = worker.metrics.render().decode()
        ready = str(worker.readiness())

    predictions = read_topic(settings, settings.topics.predictions, expected=len(events))
    ids = Counter(doc["event_id"] for _, doc in predictions)
    assert set(ids) == {record["event_id"] for _, _, record in events}  # 0 lost
    assert max(ids.values()) == 1  # 0 duplicated
    assert read_topic(settings, settings.topics.dead_letter, timeout=2, idle=1) == []
    assert "streamapp_schema_registry_outages_total 1.0" in metrics
    logged = caplog.text
    assert logged.count("schema registry unreachable") == 1  # one line per state change
    assert logged.count("schema registry reachable again") == 1
    assert secret not in logged and secret not in metrics and secret not in ready


@pytest.mark.parametrize("fmt", ["avro", "json-schema", "protobuf"])
def test_streamapp_produce_speaks_the_registry_formats(
    make_settings: Callable[..., Settings],
    schema_registry: ApicurioRegistry,
    client: SchemaRegistryClient,
    monkeypatch: pytest.MonkeyPatch,
    fmt: str,
) -> None:
    """confluent-kafka's own serializers (through ``streamapp produce``) -> the worker ->
    Avro predictions a plain AvroDeserializer reads: every event predicted."""
    settings = registry_settings(
        make_settings,
        schema_registry,
        **{
            "schema_registry.features_format": fmt,
            "schema_registry.feedback_format": fmt,
            "schema_registry.features_field": "features",
            "schema_registry.output_format": "avro",
        },
    )
    monkeypatch.setenv("STREAMAPP_TOPICS__FEATURES", settings.topics.features)
    monkeypatch.setenv("STREAMAPP_TOPICS__FEEDBACK", settings.topics.feedback)
    args = ["produce", "-b", str(settings.kafka.bootstrap_servers), "--events", "60"]
    assert main([*args, "--format", fmt, "--registry", schema_registry.url]) == 0

    with Worker(settings) as worker:
        worker.run(count=120, timeout=60)
        stats = worker.pipeline.stats
    assert (stats.events_scored, stats.feedback_received, sum(stats.dead_letters.values())) == (
        60,
        60,
        0,
    )
    predictions = read_avro(settings, client, settings.topics.predictions, 60)
    assert sorted(doc["event_id"] for _, doc in predictions) == sorted(f"e{i}" for i in range(60))
