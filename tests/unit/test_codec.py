from __future__ import annotations

import base64

import numpy as np
import orjson
import pytest

from streamapp.codec import Codec, encode_dead_letter
from streamapp.events import PredictionBlock, Reason
from streamapp.scenarios.bad import bad_messages
from tests.conftest import assert_valid


class FakeMessage:
    """The parts of confluent_kafka.Message the codec reads."""

    def __init__(
        self,
        topic: str,
        value: bytes | None,
        offset: int = 0,
        key: bytes | None = b"k",
        partition: int = 0,
        timestamp_ms: int = 1_700_000_000_000,
    ) -> None:
        self._topic, self._value, self._offset, self._key = topic, value, offset, key
        self._partition, self._ts = partition, timestamp_ms

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes | None:
        return self._key

    def value(self) -> bytes | None:
        return self._value

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)


@pytest.fixture
def codec() -> Codec:
    return Codec(["a", "b", "c"], ["0", "1"], max_payload_bytes=1000, max_abs_value=100.0)


def feature(event_id: str, features: object, ts: float | None = None) -> bytes:
    doc: dict[str, object] = {"event_id": event_id, "features": features}
    if ts is not None:
        doc["ts"] = ts
    return orjson.dumps(doc)


def test_list_and_named_features_decode_to_one_matrix(codec: Codec) -> None:
    batch = codec.decode_batch(
        [
            FakeMessage("features", feature("e1", [1, 2, 3], ts=5.0), offset=7),
            FakeMessage("features", feature("e2", {"c": 3, "a": 1, "b": 2}), offset=8),
        ]
    )
    assert batch.features.ids == ["e1", "e2"]
    assert batch.features.X.dtype == np.float32
    np.testing.assert_array_equal(batch.features.X, [[1, 2, 3], [1, 2, 3]])
    assert batch.features.ts.tolist() == [5.0, 1_700_000_000.0]  # payload ts, else Kafka's
    assert batch.offsets == {("features", 0): 9}
    assert not batch.dead_letters


def test_integer_event_ids_are_normalized_to_strings(codec: Codec) -> None:
    batch = codec.decode_batch([FakeMessage("features", feature(42, [1, 2, 3]))])  # type: ignore[arg-type]
    assert batch.features.ids == ["42"]


def test_feedback_labels_match_classes_by_string(codec: Codec) -> None:
    batch = codec.decode_batch(
        [
            FakeMessage("feedback", orjson.dumps({"event_id": "e1", "label": 1, "ts": 9.0})),
            FakeMessage("feedback", orjson.dumps({"event_id": "e2", "label": "0"})),
        ]
    )
    assert [(f.event_id, f.label, f.ts) for f in batch.feedback] == [
        ("e1", 1, 9.0),
        ("e2", 0, 1_700_000_000.0),
    ]


@pytest.mark.parametrize(
    ("topic", "value", "reason"),
    [
        ("features", b"{oops", Reason.DECODE),
        ("features", b"\xff\xfe\xfd", Reason.ENCODING),
        ("features", None, Reason.DECODE),
        ("features", b"[" + b"1," * 600 + b"1]", Reason.OVERSIZED),
        ("features", orjson.dumps({"features": [1, 2, 3]}), Reason.SCHEMA),
        ("features", orjson.dumps({"event_id": "x", "features": ["a", 2, 3]}), Reason.SCHEMA),
        ("features", feature("x", [1, 2]), Reason.FEATURE_COUNT),
        ("features", feature("x", {"a": 1, "b": 2, "zz": 3}), Reason.FEATURE_NAMES),
        ("features", b'{"event_id": "x", "features": [NaN, 1, 2]}', Reason.NON_FINITE),
        ("features", b'{"event_id": "x", "features": [Infinity, 1, 2]}', Reason.NON_FINITE),
        ("features", feature("x", [1, 2, 1e5]), Reason.VALUE_RANGE),
        ("feedback", orjson.dumps({"event_id": "x", "label": "7"}), Reason.UNKNOWN_LABEL),
        ("feedback", orjson.dumps({"event_id": "x"}), Reason.SCHEMA),
    ],
)
def test_each_bad_input_becomes_a_dead_letter_with_its_reason(
    codec: Codec, topic: str, value: bytes | None, reason: Reason
) -> None:
    batch = codec.decode_batch(
        [
            FakeMessage("features", feature("ok1", [1, 2, 3]), offset=1),
            FakeMessage(topic, value, offset=2, partition=3),
            FakeMessage("features", feature("ok2", [1, 2, 3]), offset=3),
        ]
    )
    assert batch.features.ids == ["ok1", "ok2"]  # the loop goes on around it
    [dead] = batch.dead_letters
    assert dead.reason is reason
    assert (dead.source.topic, dead.source.partition, dead.source.offset) == (topic, 3, 2)
    assert dead.payload == value
    assert dead.message
    assert batch.offsets[(topic, 3)] == 3  # a dead-lettered input is handled, not skipped


def test_the_shared_bad_message_set_covers_its_declared_reasons() -> None:
    codec = Codec([f"f{i}" for i in range(4)], ["0", "1"], max_payload_bytes=100_000)
    msgs = [
        FakeMessage(kind, value, offset=i) for i, (kind, _, value, _) in enumerate(bad_messages(4))
    ]
    batch = codec.decode_batch(msgs)
    assert [d.reason.value for d in batch.dead_letters] == [r for *_, r in bad_messages(4)]


def test_dead_letter_record_is_schema_valid_and_base64_when_binary(codec: Codec) -> None:
    batch = codec.decode_batch([FakeMessage("features", b"\xff\x00binary", offset=5)])
    record = orjson.loads(encode_dead_letter(batch.dead_letters[0], now=1.0))
    assert_valid("dead-letter", record)
    assert record["payload_encoding"] == "base64"
    assert base64.b64decode(record["payload"]) == b"\xff\x00binary"
    assert record["source"] == {"topic": "features", "partition": 0, "offset": 5}


def test_predictions_encode_to_the_schema(codec: Codec) -> None:
    block = PredictionBlock(
        ids=["e1"],
        keys=[b"e1"],
        proba=np.array([[0.25, 0.75]], np.float32),
        labels=np.array([1]),
        event_ts=np.array([3.0]),
        scored_ts=4.0,
        head_seq=np.array([12]),
    )
    [(key, value)] = codec.encode_predictions(block, "m", "1")
    doc = orjson.loads(value)
    assert_valid("prediction", doc)
    assert key == b"e1"
    assert doc["label"] == "1"
    assert doc["probabilities"] == {"0": 0.25, "1": 0.75}
    assert doc["model"] == {"name": "m", "version": "1", "head_seq": 12}


_EDGE_DOCS = [
    {"event_id": "e", "features": [1, 2.5, 3]},
    {"event_id": 7, "features": [1, 2, 3], "ts": 0, "extra": "kept"},
    {"event_id": "e", "features": [True, 2, 3]},  # a bool is not a JSON number
    {"event_id": "e", "features": ["1.5", 2, 3]},
    {"event_id": "e", "features": [None, 2, 3]},
    {"event_id": "", "features": [1, 2, 3]},
    {"event_id": "x" * 257, "features": [1, 2, 3]},
    {"event_id": False, "features": [1, 2, 3]},
    {"event_id": 1.5, "features": [1, 2, 3]},
    {"event_id": "e", "features": [1, 2, 3], "ts": -1},
    {"event_id": "e", "features": [1, 2, 3], "ts": True},
    {"event_id": "e", "features": [1, 2, 3], "ts": "now"},
    {"event_id": "e", "features": []},
    {"features": [1, 2, 3]},
]


@pytest.mark.parametrize("doc", _EDGE_DOCS)
def test_the_fast_path_accepts_only_what_the_schema_accepts(codec: Codec, doc: dict) -> None:
    """Decoding skips the schema validator for the common shape; it must never let through
    what the schema would reject."""
    from streamapp.schemas import validator

    fast = codec._is_plain_feature_event(doc, doc.get("features"))
    try:
        validator("feature-event")(doc)
        valid = True
    except Exception:
        valid = False
    assert not fast or valid
    batch = codec.decode_batch([FakeMessage("features", orjson.dumps(doc))])
    assert len(batch.features) + len(batch.dead_letters) == 1
    if not valid:
        assert batch.dead_letters[0].reason is Reason.SCHEMA


def test_an_integer_beyond_float_range_is_a_range_error(codec: Codec) -> None:
    value = b'{"event_id": "big", "features": [1, 2, 1%s]}' % (b"0" * 400)
    [dead] = codec.decode_batch([FakeMessage("features", value)]).dead_letters
    assert dead.reason is Reason.VALUE_RANGE
