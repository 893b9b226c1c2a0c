"""The regression wire formats (issue 34): feedback whose label is the target, a JSON number
(``schemas/regression-feedback.schema.json``); predictions with a value and a conformal
interval (``regression-prediction.schema.json`` and its Avro twin); training examples with
numeric labels. Outputs and dead letters are validated with the reference implementation
(jsonschema), and the decoder is held to the schema both ways: it accepts nothing the schema
rejects, and what the schema rejects is a ``schema`` dead letter."""

from __future__ import annotations

import io
import json
import math
import struct
from types import SimpleNamespace
from typing import Any

import fastavro
import jsonschema
import numpy as np
import orjson
import pytest
from confluent_kafka.schema_registry import Schema

from streamapp.assembly import build_codec
from streamapp.codec import Codec, DecodedBatch, encode_json
from streamapp.codec import decode as decode_module
from streamapp.codec.avro_in import AvroDocuments
from streamapp.codec.avro_out import avro_outputs, load_avro_schema
from streamapp.codec.plain import REGRESSION_FEEDBACK, decode_plain
from streamapp.codec.registry import FieldMapping, WireReader, record_fields
from streamapp.codec.wiring import use_registry
from streamapp.events import JoinedExamples, PredictionBlock, Reason
from streamapp.schemas import load_schema
from streamapp.settings import Settings
from tests.conftest import assert_valid
from tests.fakes import DEFAULT_TIMESTAMP_MS, FakeMessage

KAFKA_TS = DEFAULT_TIMESTAMP_MS / 1000  # FakeMessage's Kafka timestamp, seconds
NOW = KAFKA_TS + 1.0


@pytest.fixture
def codec() -> Codec:
    return Codec(["a", "b"], [], task="regression", max_abs_target=1e6, max_payload_bytes=10_000)


def schema_accepts(name: str, doc: object) -> bool:
    return bool(jsonschema.Draft202012Validator(load_schema(name)).is_valid(doc))


def decode_labels(codec: Codec, values: list[bytes | None]) -> DecodedBatch:
    messages = [FakeMessage("feedback", i % 2, i, value=v) for i, v in enumerate(values)]
    return codec.decode_batch(messages, now=NOW)


def bits(x: float) -> bytes:
    return struct.pack("<d", x)


# -- feedback ---------------------------------------------------------------------------------

VALID = [
    (b'{"event_id": "int", "label": 3}', 3.0),
    (b'{"event_id": "float", "label": 2.5, "ts": 1.0}', 2.5),
    (b'{"event_id": "neg", "label": -17.25}', -17.25),
    (b'{"event_id": "exp", "label": 1.5e3}', 1500.0),
    (b'{"event_id": "EXP", "label": -2E-3}', -0.002),
    (b'{"event_id": "zero", "label": -0.0}', -0.0),
    (b'{"event_id": "bound", "label": 1000000}', 1e6),
    (b'{"event_id": "tiny", "label": 5e-324}', 5e-324),
    (b'{"event_id": "under", "label": 1e-400}', 0.0),
    (b'{"event_id": "exact", "label": 0.1, "extra": {"kept": [true, null]}}', 0.1),
]


def test_numbers_decode_to_float_targets_bit_for_bit(codec: Codec) -> None:
    batch = decode_labels(codec, [value for value, _ in VALID])
    assert batch.dead_letters == []
    assert [fb.event_id for fb in batch.feedback] == [json.loads(v)["event_id"] for v, _ in VALID]
    for fb, (value, expected) in zip(batch.feedback, VALID, strict=True):
        assert type(fb.label) is float
        assert bits(fb.label) == bits(expected), value  # -0.0 stays -0.0
        assert schema_accepts("regression-feedback", json.loads(value))
    assert [fb.ts for fb in batch.feedback[:3]] == [KAFKA_TS, 1.0, KAFKA_TS]


NOT_NUMBERS = [
    b'{"event_id": "t", "label": true}',
    b'{"event_id": "f", "label": false}',
    b'{"event_id": "s", "label": "1.5"}',
    b'{"event_id": "n", "label": null}',
    b'{"event_id": "o", "label": {"value": 1.5}}',
    b'{"event_id": "a", "label": [1.5]}',
    b'{"event_id": "m"}',
]


@pytest.mark.parametrize("value", NOT_NUMBERS)
def test_a_label_that_is_not_a_json_number_is_a_schema_dead_letter(
    codec: Codec, value: bytes
) -> None:
    [dead] = decode_labels(codec, [value]).dead_letters
    assert dead.reason is Reason.SCHEMA
    assert not schema_accepts("regression-feedback", json.loads(value))
    assert_valid("dead-letter", orjson.loads(codec.encode_dead_letter(dead, now=1.0)))


OUT_OF_RANGE = [
    (b'{"event_id": "inf", "label": 1e999}', Reason.NON_FINITE),
    (b'{"event_id": "-inf", "label": -1e999}', Reason.NON_FINITE),
    (b'{"event_id": "nan", "label": NaN}', Reason.NON_FINITE),
    (b'{"event_id": "Inf", "label": -Infinity}', Reason.NON_FINITE),
    (b'{"event_id": "big", "label": 1000000.5}', Reason.VALUE_RANGE),
    (b'{"event_id": "-big", "label": -2e6}', Reason.VALUE_RANGE),
    (b'{"event_id": "int400", "label": 1%s}' % (b"0" * 400), Reason.VALUE_RANGE),
    (b'{"event_id": "u64", "label": 18446744073709551617}', Reason.VALUE_RANGE),
    (b'{"event_id": "far", "label": 1.0, "ts": 1e12}', Reason.TS_OUT_OF_RANGE),
]


@pytest.mark.parametrize(("value", "reason"), OUT_OF_RANGE)
def test_a_number_beyond_float_or_the_bound_is_dead_lettered_with_its_reason(
    codec: Codec, value: bytes, reason: Reason
) -> None:
    [dead] = decode_labels(codec, [value]).dead_letters
    assert dead.reason is reason
    assert dead.payload == value
    assert_valid("dead-letter", orjson.loads(codec.encode_dead_letter(dead, now=1.0)))


def test_the_bound_is_the_codecs_max_abs_target_not_the_features_bound() -> None:
    # the default target bound (1e12) is far beyond the features' (1e6): amounts in cents
    default = Codec(["a"], [], task="regression")
    batch = decode_labels(default, [b'{"event_id": "p", "label": 25000000.5}'])
    assert [fb.label for fb in batch.feedback] == [25000000.5] and not batch.dead_letters
    [dead] = decode_labels(default, [b'{"event_id": "q", "label": 2e12}']).dead_letters
    assert dead.reason is Reason.VALUE_RANGE
    wide = Codec(["a"], [], task="regression", max_abs_target=1e308)
    [fb] = decode_labels(wide, [b'{"event_id": "u64", "label": 18446744073709551617}']).feedback
    assert fb.label == 2.0**64


EDGE_LABELS: list[object] = [
    {"event_id": "e", "label": 1},
    {"event_id": "e", "label": 1.5, "ts": 5},
    {"event_id": "e", "label": True},
    {"event_id": "e", "label": "1"},
    {"event_id": "e", "label": None},
    {"event_id": "e", "label": [1]},
    {"event_id": "e", "label": {"1": 1}},
    {"event_id": "e", "label": 2**63 - 1},
    {"event_id": "e", "label": 2**63},
    {"event_id": "e", "label": -(2**63)},
    {"event_id": "e", "label": 2**53 + 1},
    {"event_id": "e", "label": 1.0, "ts": -1},
    {"event_id": "e", "label": 1.0, "ts": -0.0},
    {"event_id": "e", "label": 1.0, "ts": None},
    {"event_id": "e", "label": 1.0, "ts": "5"},
    {"event_id": "e", "label": 1.0, "ts": False},
    {"event_id": 3, "label": 1.0},
    {"event_id": "", "label": 1.0},
    {"event_id": "x" * 256, "label": 1.0, "extra": [1, {"a": None}]},
    {"event_id": "x" * 257, "label": 1.0},
    {"event_id": None, "label": 1.0},
    {"label": 1.0},
    ["e", 1.0],
    "1.5",
]


@pytest.mark.parametrize("doc", EDGE_LABELS)
def test_the_decoder_and_the_schema_agree_both_ways(codec: Codec, doc: object) -> None:
    """What the typed decoder or the codec takes, the schema accepts; what the schema
    rejects, the codec dead-letters as ``schema``."""
    value = orjson.dumps(doc)
    valid = schema_accepts("regression-feedback", doc)
    [typed] = decode_plain(REGRESSION_FEEDBACK, [value], math.inf)
    assert typed is None or valid
    assert not codec._is_plain_target(doc) or valid  # the per-message checks' shortcut
    batch = decode_labels(codec, [value])
    assert len(batch.feedback) + len(batch.dead_letters) == 1
    if batch.feedback:
        assert valid
    if not valid:
        assert batch.dead_letters[0].reason is Reason.SCHEMA


def _corpus() -> list[bytes | None]:
    values: list[bytes | None] = [v for v, _ in VALID] + NOT_NUMBERS
    values += [v for v, _ in OUT_OF_RANGE] + [orjson.dumps(d) for d in EDGE_LABELS]
    values += [None, b"not json", b'{"event_id": "u", "label": 1, "x": "\xff"}', b"x" * 20_000]
    order = np.random.default_rng(3).permutation(len(values))
    return [values[i] for i in order]


def test_the_batch_path_decodes_exactly_as_the_per_message_checks(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    messages = [FakeMessage("feedback", i % 2, i, value=v) for i, v in enumerate(_corpus())]
    fast = codec.decode_batch(messages, now=NOW)
    monkeypatch.setattr(decode_module, "decode_plain", _explode)  # no batch path
    slow = codec.decode_batch(messages, now=NOW)
    assert fast.feedback == slow.feedback
    assert [bits(fb.label) for fb in fast.feedback] == [bits(fb.label) for fb in slow.feedback]
    assert fast.dead_letters == slow.dead_letters
    assert len(fast.feedback) >= 14 and len(fast.dead_letters) >= 40
    assert {d.reason for d in fast.dead_letters} >= {
        Reason.SCHEMA,
        Reason.NON_FINITE,
        Reason.VALUE_RANGE,
        Reason.TS_OUT_OF_RANGE,
        Reason.DECODE,
        Reason.OVERSIZED,
        Reason.ENCODING,
    }


def _explode(*args: object) -> None:
    raise AssertionError("reached a path that must not run")


def test_the_common_shape_never_reaches_the_per_message_checks(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(Codec, "_decode_feedback", _explode)
    batch = decode_labels(codec, [v for v, _ in VALID[:8]])
    assert len(batch.feedback) == 8


def test_a_mixed_batch_keeps_events_labels_and_dead_letters_apart(codec: Codec) -> None:
    messages = [
        FakeMessage("features", 0, 0, value=b'{"event_id": "e1", "features": [1, 2]}'),
        FakeMessage("feedback", 0, 1, value=b'{"event_id": "e1", "label": 4.25}'),
        FakeMessage("feedback", 0, 2, value=b'{"event_id": "e2", "label": "4.25"}'),
    ]
    batch = codec.decode_batch(messages, now=NOW)
    assert batch.features.ids == ["e1"]
    assert [(fb.event_id, fb.label) for fb in batch.feedback] == [("e1", 4.25)]
    assert [(d.source.offset, d.reason) for d in batch.dead_letters] == [(2, Reason.SCHEMA)]


def test_a_regression_codec_has_no_classes_and_the_task_is_checked() -> None:
    with pytest.raises(ValueError, match="no classes"):
        Codec(["a"], ["0", "1"], task="regression")
    with pytest.raises(ValueError, match="task"):
        Codec(["a"], ["0"], task="ranking")  # type: ignore[arg-type]
    classifier = Codec(["a"], ["0", "1"])  # its feedback format is unchanged: classes
    [dead] = decode_labels(classifier, [b'{"event_id": "e", "label": 2.5}']).dead_letters
    assert dead.reason is Reason.SCHEMA


def test_build_codec_takes_the_task_from_the_manifest() -> None:
    def bundle(**task: str) -> Any:
        return SimpleNamespace(manifest=SimpleNamespace(feature_names=["a"], classes=[], **task))

    assert build_codec(Settings(), bundle(task="regression")).task == "regression"
    # a manifest without ``task`` loads as a classifier's (test_regression_bundle)
    assert build_codec(Settings(), bundle(task="classification")).task == "classification"


# -- registry formats -------------------------------------------------------------------------


class Registry:
    """A stand-in registry client: writer schemas by id, and registration."""

    def __init__(self, schemas: dict[int, dict[str, Any]] | None = None) -> None:
        self.schemas = schemas or {}
        self.subjects: dict[str, Any] = {}

    def get_schema(self, schema_id: int) -> Schema:
        if schema_id in self.schemas:
            return Schema(json.dumps(self.schemas[schema_id]), "AVRO")
        return list(self.subjects.values())[schema_id - 1]

    def register_schema(self, subject: str, schema: Any) -> int:
        self.subjects[subject] = schema
        return len(self.subjects)


def wire(schema_id: int, schema: dict[str, Any], record: dict[str, Any]) -> bytes:
    out = io.BytesIO()
    fastavro.schemaless_writer(out, fastavro.parse_schema(schema), record)
    return b"\x00" + schema_id.to_bytes(4, "big") + out.getvalue()


def test_the_twin_maps_a_numeric_label_and_a_class_label_does_not() -> None:
    target = record_fields("AVRO", json.dumps(load_avro_schema("regression-feedback")))
    classes = record_fields("AVRO", json.dumps(load_avro_schema("feedback")))
    regression = FieldMapping.of(["a", "b"], numeric_label=True)
    assert regression.problems(target, "feedback") == []
    assert regression.problems(classes, "feedback") == [
        "label field 'label' is label, not a number (a target)"
    ]
    assert FieldMapping.of(["a", "b"]).problems(classes, "feedback") == []  # unchanged
    settings = Settings(schema_registry={"url": "http://127.0.0.1:1", "feedback_format": "avro"})
    codec = Codec(["a", "b"], [], task="regression")
    use_registry(codec, settings, Registry())
    assert codec.feedback_wire is not None and codec.feedback_wire.mapping.numeric_label


def test_avro_feedback_decodes_targets_as_the_per_message_checks_do(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = load_avro_schema("regression-feedback")
    records = [
        {"event_id": "ok", "label": 2.5, "ts": None},
        {"event_id": "ts", "label": -1e-3, "ts": KAFKA_TS - 5},
        {"event_id": "nan", "label": math.nan, "ts": None},
        {"event_id": "inf", "label": -math.inf, "ts": None},
        {"event_id": "huge", "label": 1e300, "ts": None},
        {"event_id": "future", "label": 1.0, "ts": KAFKA_TS + 3600},
        {"event_id": "", "label": 1.0, "ts": None},
    ]
    messages = [
        FakeMessage("feedback", 0, i, value=wire(1, schema, r)) for i, r in enumerate(records)
    ]

    def decode() -> tuple[Any, ...]:
        codec.feedback_wire = WireReader(
            Registry({1: schema}),
            "avro",
            FieldMapping.of(["a", "b"], numeric_label=True),
            "feedback",
        )
        batch = codec.decode_batch(messages, now=NOW)
        return (
            [(fb.event_id, fb.label, fb.ts) for fb in batch.feedback],
            [(d.source.offset, d.reason.value) for d in batch.dead_letters],
        )

    shortcut = decode()
    monkeypatch.setattr(Codec, "_plain_wired_target", lambda *args: None)
    assert decode() == shortcut
    assert shortcut == (
        [("ok", 2.5, KAFKA_TS), ("ts", -1e-3, KAFKA_TS - 5)],
        [
            (2, "non_finite"),
            (3, "non_finite"),
            (4, "value_range"),
            (5, "ts_out_of_range"),
            (6, "schema"),
        ],
    )


# -- predictions ------------------------------------------------------------------------------


def _block(threshold: np.ndarray | None, served_by: np.ndarray | None = None) -> PredictionBlock:
    n = 5
    return PredictionBlock(
        ids=[f"e{i}" for i in range(n)],
        keys=[f"k{i}".encode() for i in range(n)],
        proba=np.array([[12.5], [-3.0], [0.1], [7.0], [1e5]]),
        labels=np.zeros(n, np.int64),
        event_ts=np.arange(n, dtype=np.float64) + 100.0,
        scored_ts=200.0,
        head_seq=np.array([3, 3, 3, 4, 4]),
        served_by=served_by,
        threshold=threshold,
        coverage=None if threshold is None else 0.9,
    )


def test_predictions_carry_the_value_and_its_interval() -> None:
    codec = Codec(["a", "b"], [], task="regression")
    block = _block(np.array([1.5, np.nan, np.inf, -np.inf, 0.25]), np.array([0, 1, 0, 0, 0]))
    records = codec.encode_predictions(block, "m", "2")
    assert [key for key, _ in records] == block.keys
    docs = [orjson.loads(value) for _, value in records]
    for (_, value), doc in zip(records, docs, strict=True):
        assert_valid("regression-prediction", doc)
        assert value == encode_json(doc)  # each record exactly as encoded alone
    assert [d["value"] for d in docs] == [12.5, -3.0, 0.1, 7.0, 1e5]
    assert [d.get("interval") for d in docs] == [
        {"low": 11.0, "high": 14.0, "coverage": 0.9},
        None,  # NaN: no half-width known
        {"low": None, "high": None, "coverage": 0.9},  # unbounded: too few labels yet
        {"low": 7.0, "high": 7.0, "coverage": 0.9},  # an empty interval: the point
        {"low": 1e5 - 0.25, "high": 1e5 + 0.25, "coverage": 0.9},
    ]
    assert docs[0]["model"] == {"name": "m", "version": "2", "head_seq": 3, "state": "adapted"}
    assert docs[1]["model"]["state"] == "source"
    assert (docs[0]["event_ts"], docs[0]["scored_ts"]) == (100.0, 200.0)
    assert not schema_accepts("regression-prediction", {**docs[0], "label": "0"})
    assert not schema_accepts("prediction", docs[0])  # the classification format is another


def test_without_conformal_intervals_no_prediction_has_one() -> None:
    codec = Codec(["a", "b"], [], task="regression")
    docs = [orjson.loads(v) for _, v in codec.encode_predictions(_block(None), "m", "1")]
    assert all(set(d) == {"event_id", "value", "model", "event_ts", "scored_ts"} for d in docs)
    for doc in docs:
        assert_valid("regression-prediction", doc)
    assert codec.encode_predictions(_block(np.full(5, 1.0)).take(np.arange(0)), "m", "1") == []


def test_avro_outputs_write_regression_predictions_with_their_twin() -> None:
    codec = Codec(["a", "b"], [], task="regression")
    settings = Settings(schema_registry={"url": "http://127.0.0.1:1", "output_format": "avro"})
    registry = Registry()
    outputs = avro_outputs(settings, registry, task="regression")
    assert outputs is not None
    for topic in (settings.topics.predictions, settings.topics.shadow_predictions):
        registered = registry.subjects[f"{topic}-value"]
        assert orjson.loads(registered.schema_str) == load_avro_schema("regression-prediction")
    records = codec.encode_predictions(
        _block(np.array([1.5, np.nan, np.inf, -np.inf, 0.25])), "m", "1"
    )
    sink = ListSink()
    outputs.sink(sink).produce_many(settings.topics.predictions, records)
    avro = AvroDocuments("regression-prediction", registry)
    assert [avro.decode(value) for _, value in sink.records] == [
        orjson.loads(value) for _, value in records
    ]
    classifier_registry = Registry()
    avro_outputs(settings, classifier_registry)  # a classifier's: the prediction twin, as before
    registered = classifier_registry.subjects[f"{settings.topics.predictions}-value"]
    assert orjson.loads(registered.schema_str) == load_avro_schema("prediction")


class ListSink:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.records.append((key, value))

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        self.records += records


# -- training examples ------------------------------------------------------------------------

TARGETS = [0.1, -0.0, 5e-324, -1.7976931348623157e308, 2.0**53 + 2, 1 / 3, -12.5, 1e-300]


def test_training_examples_round_trip_float_labels_bit_for_bit() -> None:
    codec = Codec(["a", "b"], [], task="regression")
    n, dim = len(TARGETS), 4
    rng = np.random.default_rng(7)
    joined = JoinedExamples(
        event_ids=[f"e{i}" for i in range(n)],
        embeddings=rng.normal(size=(n, dim)),
        labels=np.array(TARGETS, np.float64),
        delays=rng.random(n),
    )
    records = codec.encode_training_examples(joined, "m", "1")
    for (key, value), event_id in zip(records, joined.event_ids, strict=True):
        doc = orjson.loads(value)
        assert_valid("training-example", doc)
        assert key == event_id.encode() and type(doc["label"]) is float
    X, y, refused = codec.decode_training_examples([v for _, v in records], dim)
    assert refused == [] and y.dtype == np.float64
    assert y.view(np.uint64).tolist() == joined.labels.view(np.uint64).tolist()
    np.testing.assert_array_equal(X, joined.embeddings)


def test_a_training_example_whose_label_is_not_a_finite_number_is_refused_in_order() -> None:
    codec = Codec(["a", "b"], [], task="regression")
    good = b'{"event_id": "e", "label": %s, "embedding": [1.0, 2.0]}'
    values: list[bytes | None] = [
        good % b"1.5",
        good % b'"1.5"',
        good % b"3",
        good % b"true",
        good % b"1e999",
        good % b"NaN",
        good % b"1" + b"0" * 400,
        None,
        good % b"-2.25",
    ]
    X, y, refused = codec.decode_training_examples(values, 2)
    assert y.tolist() == [1.5, 3.0, -2.25] and y.dtype == np.float64
    assert X.tolist() == [[1.0, 2.0]] * 3
    assert [j for j, _ in refused] == [1, 3, 4, 5, 6, 7]
    assert "not a number" in str(refused[0][1])
    classifier = Codec(["a", "b"], ["x", "y"])  # its labels stay class indices
    _, labels, _ = classifier.decode_training_examples([good % b'"y"'], 2)
    assert labels.dtype == np.int64 and labels.tolist() == [1]


@pytest.mark.parametrize("fmt", ["avro", "json-schema", "protobuf"])
def test_registry_formats_carry_the_target_from_producer_to_feedback(fmt: Any) -> None:
    """``streamapp produce``'s encoder writes targets with the regression twins; a
    regression worker's mapping fits them at start and reads the numbers back."""
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
        MockSchemaRegistryClient,
    )

    from streamapp.codec.wiring import check_mappings
    from streamapp.errors import ConfigError
    from streamapp.scenarios.base import Record
    from streamapp.scenarios.registry_format import RegistryEncoder

    client = MockSchemaRegistryClient({"url": "mock://regression"})
    encode = RegistryEncoder(client, fmt, task="regression")
    targets = [2.5, -1e-300, 3, np.float32(0.1), -7.0]
    values = [
        encode(Record("feedback", f"e{i}", {"event_id": f"e{i}", "label": t}, 0.0), "feedback")
        for i, t in enumerate(targets)
    ]
    settings = Settings(schema_registry={"url": "mock://regression", "feedback_format": fmt})
    codec = Codec(["a", "b"], [], task="regression")
    use_registry(codec, settings, client)
    check_mappings(codec)  # the latest registered schema maps: no ConfigError
    batch = decode_labels(codec, values)
    assert batch.dead_letters == []
    assert [fb.label for fb in batch.feedback] == [2.5, -1e-300, 3.0, float(np.float32(0.1)), -7.0]
    if fmt == "avro":  # a classifier's feedback (class names) does not map onto a target
        classes = MockSchemaRegistryClient({"url": "mock://classes"})
        RegistryEncoder(classes, fmt)(
            Record("feedback", "e", {"event_id": "e", "label": "x"}, 0.0), "feedback"
        )
        codec = Codec(["a", "b"], [], task="regression")
        use_registry(codec, settings, classes)
        with pytest.raises(ConfigError, match="not a number"):
            check_mappings(codec)


_PIECES = [b"1e999", b"-", b"e", b"E+", b".", b"0", b"9" * 30, b'"', b"true", b"null", b"NaN"]
_PIECES += [b"[", b"}", b",", b" ", b"\xff", b"\\u0000", b"Infinity", b"1" + b"0" * 320]


def _mutated_labels(n: int, seed: int) -> list[bytes]:
    """``n`` regression labels, most mutated: bytes replaced, dropped or inserted."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        label = float(np.round(rng.normal(0, 10.0 ** rng.integers(-3, 8)), 4))
        value = bytearray(orjson.dumps({"event_id": f"m{i}", "label": label, "ts": 1.0}))
        for _ in range(int(rng.integers(0, 3))):
            at = int(rng.integers(0, len(value)))
            piece = _PIECES[int(rng.integers(0, len(_PIECES)))]
            if rng.random() < 0.5:
                value[at : at + 1] = piece
            else:
                del value[at : at + int(rng.integers(1, 4))]
        out.append(bytes(value))
    return out


def test_thousands_of_mutated_labels_are_each_a_target_or_a_valid_dead_letter(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    values = _mutated_labels(2_000, 11)
    fast = [decode_labels(codec, values[s : s + 100]) for s in range(0, len(values), 100)]
    targets = [fb for batch in fast for fb in batch.feedback]
    dead = [d for batch in fast for d in batch.dead_letters]
    assert len(targets) + len(dead) == len(values)
    for fb in targets:  # what is accepted: a finite float within the bound
        assert type(fb.label) is float and abs(fb.label) <= codec.max_abs_target
    for start, batch in zip(range(0, len(values), 100), fast, strict=True):
        for fb in batch.feedback:  # and what the schema accepts
            assert fb.source is not None
            assert schema_accepts(
                "regression-feedback", orjson.loads(values[start + fb.source.offset])
            )
    for d in dead:
        assert_valid("dead-letter", orjson.loads(codec.encode_dead_letter(d, now=1.0)))
    reasons = {d.reason for d in dead}
    assert len(targets) > 500
    assert {Reason.SCHEMA, Reason.DECODE, Reason.VALUE_RANGE, Reason.NON_FINITE} <= reasons
    monkeypatch.setattr(decode_module, "decode_plain", _explode)  # the per-message checks
    slow = [decode_labels(codec, values[s : s + 100]) for s in range(0, len(values), 100)]
    assert [fb for batch in slow for fb in batch.feedback] == targets
    assert [d for batch in slow for d in batch.dead_letters] == dead


def test_a_protobuf_target_that_was_never_sent_is_a_missing_label_not_zero() -> None:
    """In proto3 an absent plain double reads as 0.0; the regression twin's label has
    presence, so a target that was never sent is a dead letter, and a real 0.0 is a target."""
    from confluent_kafka.schema_registry._sync.mock_schema_registry_client import (
        MockSchemaRegistryClient,
    )
    from confluent_kafka.schema_registry.protobuf import ProtobufSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    from streamapp.codec.protobuf_wire import twin_classes
    from streamapp.scenarios.base import Record
    from streamapp.scenarios.registry_format import RegistryEncoder

    client = MockSchemaRegistryClient({"url": "mock://absent"})
    encode = RegistryEncoder(client, "protobuf", task="regression")
    zero = encode(Record("feedback", "e0", {"event_id": "e0", "label": 0.0}, 0.0), "feedback")
    message = twin_classes("regression")["feedback"]
    serialize = ProtobufSerializer(message, client, {"use.deprecated.format": False})
    never = serialize(message(event_id="e1"), SerializationContext("feedback", MessageField.VALUE))
    settings = Settings(schema_registry={"url": "mock://absent", "feedback_format": "protobuf"})
    codec = Codec(["a", "b"], [], task="regression")
    use_registry(codec, settings, client)
    batch = decode_labels(codec, [zero, never])
    assert [(fb.event_id, fb.label) for fb in batch.feedback] == [("e0", 0.0)]
    assert [d.reason for d in batch.dead_letters] == [Reason.SCHEMA]
