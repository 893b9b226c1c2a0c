"""Real drift reports go through their Avro twin (``schemas/drift-report.avsc``) and come
back as they were: a report section the twin cannot carry (fastavro drops a record's
unknown keys without a word) fails here, not on a consumer's side. And with
``schema_registry.output_format=avro`` the drift topic is registered and written in Avro."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import fastavro
import numpy as np
import orjson
import pytest

from streamapp.codec import DecodedBatch, encode_json
from streamapp.codec.avro_in import AvroDocuments
from streamapp.codec.avro_out import avro_outputs, load_avro_schema
from streamapp.drift.history import parse_report
from streamapp.drift.merge import merge_reports
from streamapp.engine import Engine
from streamapp.events import DeadLetter, FeatureBlock, Feedback, Reason, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings
from tests.conftest import assert_valid

WINDOW = 40


def round_trip(schema: dict[str, Any], document: dict[str, Any]) -> Any:
    parsed = fastavro.parse_schema(schema)
    out = io.BytesIO()
    fastavro.schemaless_writer(out, parsed, document)
    return fastavro.schemaless_reader(io.BytesIO(out.getvalue()), parsed)


def as_written(decoded: Any, original: Any) -> Any:
    """``decoded`` without the nulls Avro gives an optional field the JSON left out."""
    if isinstance(decoded, dict) and isinstance(original, dict):
        return {
            k: as_written(v, original.get(k))
            for k, v in decoded.items()
            if k in original or v is not None
        }
    if isinstance(decoded, list) and isinstance(original, list) and len(decoded) == len(original):
        return [as_written(d, o) for d, o in zip(decoded, original, strict=True)]
    return decoded


def reports(bundle_path: Path, batches: int = 4, **overrides: Any) -> list[dict[str, Any]]:
    """The drift reports of a few batches of the digits-shift target, each labelled in the
    next batch, some dead letters on the way, and the final partial window; as the wire
    carries them (JSON, as the Avro sink reads them)."""
    settings = Settings(model={"bundle": bundle_path}, drift={"window_events": WINDOW}, **overrides)
    engine = Engine(settings, load_bundle(bundle_path))
    X, y, _ = get_scenario("digits-shift").target_data(WINDOW * batches + 7)
    out = []
    for b in range(batches + 1):
        rows = slice(b * WINDOW, min((b + 1) * WINDOW, len(X)))
        ids = [f"e{k}" for k in range(rows.start, rows.stop)]
        block = FeatureBlock(
            ids,
            [i.encode() for i in ids],
            X[rows].astype(np.float32),
            np.full(len(ids), 100.0 + b),
            [SourcePosition("features", 0, k) for k in range(rows.start, rows.stop)],
        )
        labels = [
            Feedback(f"e{k}", int(y[k]), 101.0 + b) for k in range(rows.start - WINDOW, rows.start)
        ]
        rejects = [
            DeadLetter(SourcePosition("features", 0, 10**6 + b), None, Reason.SCHEMA, "x", b"")
        ]
        outputs = engine.learn(
            engine.score(DecodedBatch(block, feedback=labels, dead_letters=rejects))
        )
        out += outputs.drift_reports
    final = engine.final_report(1e9)
    assert final is not None  # the 7 events past the last full window
    return [orjson.loads(encode_json(r)) for r in [*out, final]]


@pytest.fixture(scope="module")
def everything_on(digits_bundle: Path) -> list[dict[str, Any]]:
    """Challenger in shadow, guard, conformal sets, input adaptation and model selection."""
    return reports(digits_bundle, challenger={"enabled": True}, delivery={"instance_id": "w1"})


def test_the_reports_have_every_optional_section(everything_on: list[dict[str, Any]]) -> None:
    last = everything_on[-2]
    for section in ("challenger", "guard", "conformal", "imputed", "counts", "instance"):
        assert section in last, section
    assert "selection" in last["model"]["candidates"]
    assert "confusion" in last["performance"] and last["counters"]["dead_letters"]
    assert "accuracy" not in everything_on[0]["performance"]  # no label in the first window


def test_real_reports_round_trip_through_the_avro_twin(
    everything_on: list[dict[str, Any]], digits_bundle: Path
) -> None:
    twin = load_avro_schema("drift-report")
    off = reports(
        digits_bundle,
        batches=2,
        conformal={"enabled": False},
        guard={"enabled": False},
        adapt={"enabled": False},
        selection={"enabled": False},
    )
    assert "conformal" not in off[-1] and "candidates" not in off[-1]["model"]
    for report in [*everything_on, *off]:
        assert_valid("drift-report", report)  # the JSON Schema the twin is held to
        assert as_written(round_trip(twin, report), report) == report


def test_a_section_the_twin_does_not_carry_fails_the_round_trip(
    everything_on: list[dict[str, Any]],
) -> None:
    twin = load_avro_schema("drift-report")
    twin["fields"] = [f for f in twin["fields"] if f["name"] != "imputed"]
    report = everything_on[-1]
    assert as_written(round_trip(twin, report), report) != report


def test_merged_reports_sections_round_trip(
    everything_on: list[dict[str, Any]], digits_bundle: Path
) -> None:
    """A merged report (:mod:`streamapp.drift.merge`) is a summary, not a drift-report
    document (no report_seq, model, counters): the sections it shares with one go through
    the twin's types, conformal without its per-scorer alpha_t, threshold and sets."""
    full = [r for r in everything_on if r["window"]["events"] == WINDOW]
    merged = merge_reports(full[-2:], load_bundle(digits_bundle).reference)
    assert "alpha_t" not in merged["conformal"]
    shared = {k: merged[k] for k in ("ts", "features", "dataset", "prediction", "conformal")}
    twin = load_avro_schema("drift-report")
    twin["fields"] = [f for f in twin["fields"] if f["name"] in shared]
    document = orjson.loads(encode_json(shared))
    assert as_written(round_trip(twin, document), document) == document


class Registry:
    """A stand-in registry client: registration is all the Avro outputs ask of it."""

    def __init__(self) -> None:
        self.subjects: dict[str, Any] = {}

    def register_schema(self, subject: str, schema: Any) -> int:
        self.subjects[subject] = schema
        return len(self.subjects)


class Produced:
    def __init__(self) -> None:
        self.records: list[tuple[str, bytes, bytes | None]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.records.append((topic, value, key))

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        self.records += [(topic, v, k) for k, v in records]


def test_avro_output_registers_and_writes_the_drift_topic(
    everything_on: list[dict[str, Any]],
) -> None:
    settings = Settings(
        topics={"drift": "reports"},
        schema_registry={"url": "http://127.0.0.1:1", "output_format": "avro"},
    )
    registry = Registry()
    outputs = avro_outputs(settings, registry)
    assert outputs is not None
    schema = registry.subjects["reports-value"]
    assert schema.schema_type == "AVRO"
    assert orjson.loads(schema.schema_str) == load_avro_schema("drift-report")
    sink = Produced()
    report = everything_on[-1]
    outputs.sink(sink).produce("reports", encode_json(report), b"digits-shift")
    [(topic, value, key)] = sink.records
    schema_id = list(registry.subjects).index("reports-value") + 1
    assert (topic, key, value[:5]) == (
        "reports",
        b"digits-shift",
        b"\x00" + schema_id.to_bytes(4, "big"),
    )
    parsed = fastavro.parse_schema(load_avro_schema("drift-report"))
    decoded = fastavro.schemaless_reader(io.BytesIO(value[5:]), parsed)
    assert as_written(decoded, report) == report


def test_json_output_leaves_the_drift_topic_alone() -> None:
    assert avro_outputs(Settings(), Registry()) is None


class SchemaById(Registry):
    """A stand-in registry that also answers the writer schema of an id."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups: list[int] = []

    def get_schema(self, schema_id: int) -> Any:
        self.lookups.append(schema_id)
        return list(self.subjects.values())[schema_id - 1]


def test_report_reads_an_avro_drift_topic_back_as_the_json_reports(
    everything_on: list[dict[str, Any]],
) -> None:
    """``streamapp report --from-topic`` on an Avro drift topic: each value read with its
    writer schema (the registry's by id, or the twin) back to the JSON document."""
    settings = Settings(schema_registry={"url": "http://127.0.0.1:1", "output_format": "avro"})
    registry = SchemaById()
    outputs = avro_outputs(settings, registry)
    assert outputs is not None
    sink = Produced()
    for report in everything_on:
        outputs.sink(sink).produce(settings.topics.drift, encode_json(report), b"m")
    values = [value for _, value, _ in sink.records]
    for client in (registry, None):
        avro = AvroDocuments("drift-report", client)
        assert [parse_report(v, avro) for v in values] == everything_on
    assert len(set(registry.lookups)) == len(registry.lookups) == 1  # once per schema id
    assert parse_report(encode_json(everything_on[0]), avro) == everything_on[0]  # JSON too
    bad = {
        values[0][:40]: r"schema id \d+: EOFError",  # truncated
        b"\x00\x00\x00\x00\x09" + values[0][5:]: "schema id 9: ",  # no such id
        b"[1]": "not a JSON object",
        b"nope": "line 1 column 1",  # orjson: not JSON
    }
    for value, reason in bad.items():
        with pytest.raises(ValueError, match=reason):
            parse_report(value, AvroDocuments("drift-report", registry))
