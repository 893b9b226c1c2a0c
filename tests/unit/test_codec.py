from __future__ import annotations

import base64
import hashlib
import json
import math
from typing import Any

import msgspec
import numpy as np
import orjson
import pytest

from streamapp.codec import (
    RECORD_BUDGET_BYTES,
    Codec,
    DecodedBatch,
    dead_letter_key,
    encode_dead_letter,
    encode_json,
)
from streamapp.codec import decode as decode_module
from streamapp.codec.checks import MessageChecks
from streamapp.codec.plain import FEATURE_EVENTS, FEEDBACK, decode_plain
from streamapp.events import DeadLetter, Outputs, PredictionBlock, Reason, SourcePosition
from streamapp.kafka.consumer import PolledBatch
from streamapp.publish import Publisher
from streamapp.scenarios.bad import bad_messages
from streamapp.settings import TopicNames
from tests.conftest import assert_valid
from tests.fakes import DEFAULT_TIMESTAMP_MS, FakeMessage


@pytest.fixture
def codec() -> Codec:
    return Codec(["a", "b", "c"], ["0", "1"], max_payload_bytes=1000, max_abs_value=100.0)


def feature(event_id: str, features: object, ts: float | None = None) -> bytes:
    doc: dict[str, object] = {"event_id": event_id, "features": features}
    if ts is not None:
        doc["ts"] = ts
    return orjson.dumps(doc)


def test_list_and_named_features_decode_to_one_matrix(codec: Codec) -> None:
    messages = [
        FakeMessage("features", value=feature("e1", [1, 2, 3], ts=5.0), offset=7),
        FakeMessage("features", value=feature("e2", {"c": 3, "a": 1, "b": 2}), offset=8),
    ]
    batch = codec.decode_batch(messages)
    assert batch.features.ids == ["e1", "e2"]
    assert batch.features.X.dtype == np.float32
    np.testing.assert_array_equal(batch.features.X, [[1, 2, 3], [1, 2, 3]])
    assert batch.features.ts.tolist() == [5.0, 1_700_000_000.0]  # payload ts, else Kafka's
    assert PolledBatch.of(messages).offsets == {("features", 0): 9}  # the consumer's batch
    assert not batch.dead_letters


@pytest.mark.parametrize("event_id", [42, 123456789012345678901234567890, 2**53 + 1])
def test_integer_event_ids_are_refused_on_both_topics(codec: Codec, event_id: int) -> None:
    """Ids are strings: an integer beyond 2**53 cannot stay exact, and 4242 is not "4242"."""
    batch = codec.decode_batch(
        [
            # json, not orjson: orjson cannot write an integer beyond 64 bits
            FakeMessage(
                "features", value=json.dumps({"event_id": event_id, "features": [1, 2, 3]}).encode()
            ),
            FakeMessage(
                "feedback", value=json.dumps({"event_id": event_id, "label": "1"}).encode()
            ),
        ]
    )
    assert not batch.features.ids and not batch.feedback
    assert [d.reason for d in batch.dead_letters] == [Reason.SCHEMA, Reason.SCHEMA]


def test_feedback_labels_match_classes_by_string(codec: Codec) -> None:
    batch = codec.decode_batch(
        [
            FakeMessage("feedback", value=orjson.dumps({"event_id": "e1", "label": 1, "ts": 9.0})),
            FakeMessage("feedback", value=orjson.dumps({"event_id": "e2", "label": "0"})),
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
    messages = [
        FakeMessage("features", value=feature("ok1", [1, 2, 3]), offset=1),
        FakeMessage(topic, value=value, offset=2, partition=3),
        FakeMessage("features", value=feature("ok2", [1, 2, 3]), offset=3),
    ]
    batch = codec.decode_batch(messages)
    assert batch.features.ids == ["ok1", "ok2"]  # the loop goes on around it
    [dead] = batch.dead_letters
    assert dead.reason is reason
    assert (dead.source.topic, dead.source.partition, dead.source.offset) == (topic, 3, 2)
    assert dead.payload == value
    assert dead.message
    # a dead-lettered input is handled, not skipped
    assert PolledBatch.of(messages).offsets[(topic, 3)] == 3


def test_the_shared_bad_message_set_covers_its_declared_reasons() -> None:
    codec = Codec([f"f{i}" for i in range(4)], ["0", "1"], max_payload_bytes=100_000)
    msgs = [
        FakeMessage(kind, value=value, offset=i)
        for i, (kind, _, value, _) in enumerate(bad_messages(4))
    ]
    batch = codec.decode_batch(msgs)
    assert [d.reason.value for d in batch.dead_letters] == [r for *_, r in bad_messages(4)]


def test_dead_letter_record_is_schema_valid_and_base64_when_binary(codec: Codec) -> None:
    batch = codec.decode_batch([FakeMessage("features", value=b"\xff\x00binary", offset=5)])
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


@pytest.mark.parametrize(
    "ids",
    [
        ["e1"],
        ["e1", "e2", "e3"],
        ['x"},{"event_id":"y', "a\\", '\\"},{"event_id":', "é€😀", "\n\u0000", "}", "{"],
    ],
)
def test_predictions_are_encoded_as_each_record_alone(codec: Codec, ids: list[str]) -> None:
    """Predictions are encoded in one call and split: each record must be exactly what
    encoding it alone gives, whatever its id holds."""
    n = len(ids)
    rng = np.random.default_rng(2)
    block = PredictionBlock(
        ids=ids,
        keys=[i.encode() for i in ids],
        proba=rng.dirichlet([1.0, 1.0], n),
        labels=rng.integers(0, 2, n),
        event_ts=rng.random(n) * 1e9,
        scored_ts=4.0,
        head_seq=np.arange(n) % 2,
    )
    records = codec.encode_predictions(block, "m", "1")
    assert [key for key, _ in records] == block.keys
    for i, (_, value) in enumerate(records):
        doc = orjson.loads(value)
        assert doc["event_id"] == ids[i]
        assert value == encode_json(doc)
        assert doc["probabilities"] == {"0": block.proba[i, 0], "1": block.proba[i, 1]}


_EDGE_DOCS = [
    {"event_id": "e", "features": [1, 2.5, 3]},
    {"event_id": 7, "features": [1, 2, 3], "ts": 0, "extra": "kept"},
    {"event_id": "e", "features": [True, 2, 3]},  # a bool is not a JSON number
    {"event_id": "e", "features": ["1.5", 2, 3]},
    {"event_id": "e", "features": [None, 2, 3]},
    # bools among ints or floats, nested values of one shape, an integer beyond int64 (one
    # beyond uint64: in _corpus), and plain 0s and 1s: what array type inference gets wrong
    {"event_id": "e", "features": [True, False, True]},
    {"event_id": "e", "features": [0, 1, True]},
    {"event_id": "e", "features": [0.5, 1.0, False]},
    {"event_id": "e", "features": [[1], [2], [3]]},
    {"event_id": "e", "features": [1, 2, 2**63]},
    {"event_id": "e", "features": [0, 1, 0]},
    {"event_id": "", "features": [1, 2, 3]},
    {"event_id": "x" * 257, "features": [1, 2, 3]},
    {"event_id": False, "features": [1, 2, 3]},
    {"event_id": 1.5, "features": [1, 2, 3]},
    {"event_id": "e", "features": [1, 2, 3], "ts": -1},
    {"event_id": "e", "features": [1, 2, 3], "ts": True},
    {"event_id": "e", "features": [1, 2, 3], "ts": "now"},
    {"event_id": "e", "features": []},
    {"features": [1, 2, 3]},
    # what the typed decoder must refuse (or take) as the schema does
    {"event_id": "e", "features": [1, 2, 3], "ts": None},
    {"event_id": "e", "features": [1, 2, 3], "ts": -0.0},
    {"event_id": "e", "features": [1, 2, 3], "ts": [1]},
    {"event_id": "e", "features": [1, 2, 2**64 - 1]},
    {"event_id": "e", "features": [-0.0, 2**53 + 1, -(2**63)]},
    {"event_id": "e", "features": [1, 2, 3, 4]},
    {"event_id": "e", "features": [1, 2, {"a": 1}]},
    {"event_id": "e", "features": {"a": 1, "b": 2, "c": True}},
    {"event_id": "e", "features": None},
    {"event_id": "e", "features": "1,2,3"},
    {"event_id": None, "features": [1, 2, 3]},
    {"event_id": ["e"], "features": [1, 2, 3]},
    {"event_id": "😀" * 230, "features": [1, 2, 3]},  # 256 of them: _RAW_EVENTS
    {"event_id": "é" * 257, "features": [1, 2, 3]},
    {"event_id": "é" * 256, "features": [1, 2, 3], "extra": {"nested": [True, None, "x"]}},
]


@pytest.mark.parametrize("doc", _EDGE_DOCS)
def test_the_fast_path_accepts_only_what_the_schema_accepts(codec: Codec, doc: dict) -> None:
    """Decoding skips the schema validator for the common shape; it must never let through
    what the schema would reject."""
    fast = codec.is_plain_feature_event(doc, doc.get("features"))
    [typed] = decode_plain(FEATURE_EVENTS, [orjson.dumps(doc)], math.inf)
    valid = _schema_accepts("feature-event", doc)
    assert not fast or valid
    assert typed is None or valid
    batch = codec.decode_batch([FakeMessage("features", value=orjson.dumps(doc))])
    assert len(batch.features) + len(batch.dead_letters) == 1
    if not valid:
        assert batch.dead_letters[0].reason is Reason.SCHEMA


_EDGE_LABELS = [
    {"event_id": "e", "label": "1"},
    {"event_id": "e", "label": 1, "ts": 5},
    {"event_id": "e", "label": True},
    {"event_id": "e", "label": 1.0},
    {"event_id": "e", "label": "7"},
    {"event_id": "e", "label": "0", "ts": -1},
    {"event_id": "e", "label": "0", "ts": 1e300},
    {"event_id": "e", "label": "0", "ts": 2**63},
    {"event_id": "e", "label": "0", "ts": None},
    {"event_id": 3, "label": "0"},
    {"event_id": "", "label": "0"},
    {"label": "0"},
    ["e", "0"],
    {"event_id": "e", "label": None},
    {"event_id": "e", "label": ["1"]},
    {"event_id": "e", "label": {"1": 1}},
    {"event_id": "e", "label": 2**63 - 1},
    {"event_id": "e", "label": 2**63},
    {"event_id": "e", "label": 2**64 - 1},
    {"event_id": "e", "label": -(2**63)},
    {"event_id": "e", "label": " 1 "},
    {"event_id": "e", "label": "1", "ts": -0.0},
    {"event_id": "e", "label": "1", "ts": "5"},
    {"event_id": "e", "label": "1", "ts": False},
    {"event_id": "x" * 256, "label": "1", "extra": [1, {"a": None}]},
    {"event_id": "x" * 257, "label": "1"},
    {"event_id": None, "label": "1"},
]


@pytest.mark.parametrize("doc", _EDGE_LABELS)
def test_the_typed_feedback_decoder_accepts_only_what_the_schema_accepts(doc: object) -> None:
    [typed] = decode_plain(FEEDBACK, [orjson.dumps(doc)], math.inf)
    assert typed is None or _schema_accepts("feedback", doc)


def _schema_accepts(schema: str, doc: object) -> bool:
    from streamapp.schemas import validator

    try:
        validator(schema)(doc)
    except Exception:
        return False
    return True


# raw payloads (what orjson.dumps cannot write): invalid UTF-8 and lone surrogates in members
# msgspec skips, nesting around msgspec's and orjson's depth limits, numbers beyond float
# range, JSON that is not quite JSON, duplicate members
_NESTED = b'{"event_id": "n%d", "features": [1, 2, 3], "x": %s}'
_RAW_EVENTS = [
    b'{"event_id": "u1", "features": [1, 2, 3], "x": "\xff"}',
    b'{"event_id": "u2", "features": [1, 2, 3], "\xff": 1}',
    b'{"event_id": "u3", "features": [1, 2, 3], "x": "\xed\xa0\x80"}',
    b'{"event_id": "u4", "features": [1, 2, 3], "x": "\xc0\xaf"}',
    b'{"event_id": "u5", "features": [1, 2, 3], "x": "\xf4\x90\x80\x80"}',
    b'{"event_id": "\xed\xa0\x80", "features": [1, 2, 3]}',
    b'{"event_id": "s1", "features": [1, 2, 3], "x": "\\ud800"}',
    b'{"event_id": "s2", "features": [1, 2, 3], "\\udc00": 1}',
    b'{"event_id": "\\ud800", "features": [1, 2, 3]}',
    b'{"event_id": "%s", "features": [1, 2, 3]}' % (b"\\ud83d\\ude00" * 256),
    b'{"event_id": "%s", "features": [1, 2, 3]}' % (b"\\ud83d\\ude00" * 257),
    _NESTED % (990, b"[" * 990 + b"]" * 990),
    _NESTED % (1000, b"[" * 1000 + b"]" * 1000),
    _NESTED % (1022, b'{"a": ' * 1022 + b"1" + b"}" * 1022),
    _NESTED % (1030, b"[" * 1030 + b"]" * 1030),
    b'{"event_id": "r1", "features": [1, 2, 3], "x": 1e400}',
    b'{"event_id": "r2", "features": [1, 2, 3], "x": 1%s}' % (b"0" * 400),
    b'{"event_id": "r3", "features": [1, 2, 3], "x": NaN}',
    b'{"event_id": "r4", "features": [1, 2, 3], "x": -Infinity}',
    b'{"event_id": "r5", "features": [1, 2, 3], "ts": 1e400}',
    b'{"event_id": "r6", "features": [1, 2, 1.7976931348623157e308]}',
    b'{"event_id": "r7", "features": [1e-400, -1e-400, 0e99999999999]}',
    b'{"event_id": "r8", "features": [1, 2, 18446744073709551615]}',
    b'{"event_id": "r9", "features": [1, 2, 9007199254740993]}',
    b' \t\r\n{"event_id": "w1", "features": [1, 2, 3]} \n',
    b'\x0c{"event_id": "w2", "features": [1, 2, 3]}',
    b'\xef\xbb\xbf{"event_id": "w3", "features": [1, 2, 3]}',
    b'{"event_id": "w4", "features": [1, 2, 3]}\x00',
    b'{"event_id": "w5", "features": [1, 2, 3],}',
    b'{"event_id": "w6", "features": [01, 2, 3]}',
    b'{"event_id": "w7", "features": [1, 2, 3], "x": [1,]}',
    b'{"event_id": "d1", "features": [true, 2, 3], "features": [1, 2, 3]}',
    b'{"event_id": "d2", "features": [1, 2, 3], "features": [true, 2, 3]}',
    b'{"event_id": "d3", "features": [1, 2, 3], "event_id": 4}',
    b'{"event_id": "d4", "features": [1, 2, 3], "ts": -1, "ts": 5}',
    b'{"event_id": "d5", "features": [1, 2, 3], "ts": 5, "ts": null}',
]
_RAW_LABELS = [
    b'{"event_id": "u1", "label": "1", "x": "\xff"}',
    b'{"event_id": "s1", "label": "1", "x": "\\ud800"}',
    b'{"event_id": "n1", "label": "1", "x": %s}' % (b"[" * 1000 + b"]" * 1000),
    b'{"event_id": "r1", "label": "1", "x": 1e400}',
    b'{"event_id": "r2", "label": 1e400}',
    b'{"event_id": "r3", "label": 18446744073709551617}',
    b'{"event_id": "r3", "label": -9223372036854775809}',
    b'{"event_id": "r4", "label": 1.0}',
    b'{"event_id": "r5", "label": "1", "ts": 1e400}',
    b'{"event_id": "d1", "label": "7", "label": "1"}',
    b'{"event_id": "d2", "label": "1", "label": "7"}',
]


@pytest.mark.parametrize(
    ("decoder", "schema", "value"),
    [(FEATURE_EVENTS, "feature-event", v) for v in _RAW_EVENTS]
    + [(FEEDBACK, "feedback", v) for v in _RAW_LABELS],
)
def test_the_typed_decoders_take_raw_bytes_only_as_the_checks_and_the_schema_do(
    decoder: msgspec.json.Decoder[Any], schema: str, value: bytes
) -> None:
    """What a typed decoder takes, the per-message checks parse (they would not reject its
    encoding or syntax) and the schema accepts."""
    from streamapp.schemas import validator

    [typed] = decode_plain(decoder, [value], math.inf)
    if typed is not None:
        validator(schema)(Codec(["a"], ["0"])._parse(value))


def _corpus() -> list[FakeMessage]:
    """Valid and invalid events and labels, interleaved on two partitions."""
    values: list[tuple[str, bytes]] = [("features", orjson.dumps(d)) for d in _EDGE_DOCS]
    values += [("feedback", orjson.dumps(d)) for d in _EDGE_LABELS]
    values += [(kind, value) for kind, _, value, _ in bad_messages(3)]
    values += [
        ("features", b'{"event_id": "far", "features": [1, 2, 3], "ts": 1e12}'),
        ("features", b'{"event_id": "inf", "features": [1, 2, 1e400]}'),
        ("features", b'{"event_id": "big", "features": [1, 2, 1e7]}'),
        ("features", b'{"event_id": "u65", "features": [1.5, 2, 18446744073709551616]}'),
        ("features", b'{"event_id": "ok", "features": {"a": 1, "b": 2, "c": 3}}'),
        ("features", b'{"event_id": "dup", "event_id": "dup2", "features": [1, 2, 3]}'),
        ("features", None),
        ("feedback", None),
    ]
    rng = np.random.default_rng(4)
    order = rng.permutation(len(values))
    return [
        FakeMessage(values[i][0], value=values[i][1], offset=n, partition=int(i) % 2)
        for n, i in enumerate(order)
    ]


def test_the_batch_paths_decode_exactly_as_the_per_message_checks(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch paths are shortcuts: with or without them, the same events (values, times,
    sources), labels and dead letters (reasons, messages, order) come out."""
    fast, _ = _both_ways(codec, _corpus(), monkeypatch)
    assert len(fast.features) >= 3 and len(fast.feedback) >= 2 and len(fast.dead_letters) >= 20


def test_the_batch_paths_decode_raw_bytes_exactly_as_the_per_message_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The same on payloads orjson.dumps cannot write, with room for deep nesting and
    classes that are integers beyond 64 bits."""
    codec = Codec(
        ["a", "b", "c"],
        ["0", "1", "7", "9223372036854775808", "18446744073709551617", "1e400"],
        max_payload_bytes=10_000,
        max_abs_value=1e308,
    )
    values = [("features", v) for v in _RAW_EVENTS] + [("feedback", v) for v in _RAW_LABELS]
    values += [("features", orjson.dumps(d)) for d in _EDGE_DOCS]
    values += [("feedback", orjson.dumps(d)) for d in _EDGE_LABELS]
    messages = [
        FakeMessage(topic, value=value, offset=n, partition=n % 2)
        for n, (topic, value) in enumerate(values)
    ]
    fast, _ = _both_ways(codec, messages, monkeypatch)
    assert len(fast.features) >= 10 and len(fast.feedback) >= 5 and len(fast.dead_letters) >= 20


def _both_ways(
    codec: Codec, messages: list[FakeMessage], monkeypatch: pytest.MonkeyPatch
) -> tuple[DecodedBatch, DecodedBatch]:
    """``messages`` decoded with and without the batch paths, checked to agree."""
    fast = codec.decode_batch(messages, now=1_700_000_000.0)
    monkeypatch.setattr(decode_module, "decode_plain", _explode)  # no batch path
    slow = codec.decode_batch(messages, now=1_700_000_000.0)
    assert fast.features.ids == slow.features.ids
    np.testing.assert_array_equal(fast.features.X, slow.features.X)
    np.testing.assert_array_equal(fast.features.ts, slow.features.ts)
    assert fast.features.sources == slow.features.sources
    assert fast.features.keys == slow.features.keys
    assert fast.feedback == slow.feedback
    assert fast.dead_letters == slow.dead_letters
    assert fast.positions == slow.positions and fast.payloads == slow.payloads
    return fast, slow


def test_an_integer_beyond_float_range_is_a_range_error(codec: Codec) -> None:
    value = b'{"event_id": "big", "features": [1, 2, 1%s]}' % (b"0" * 400)
    [dead] = codec.decode_batch([FakeMessage("features", value=value)]).dead_letters
    assert dead.reason is Reason.VALUE_RANGE


# -- hostile input (issue 11) ----------------------------------------------------------------

_DEEP = 50_000


@pytest.mark.parametrize(
    ("topic", "value"),
    [
        ("features", b"[" * 100_000),
        ("features", b'{"event_id": "d", "features": %s}' % (b"[" * _DEEP + b"]" * _DEEP)),
        ("feedback", b'{"event_id": "d", "label": %s}' % (b"[" * _DEEP + b"]" * _DEEP)),
        ("features", b'{"event_id": "d", "features": [NaN, %s]}' % (b"[" * _DEEP)),
    ],
)
def test_deep_nesting_is_a_decode_dead_letter_and_the_batch_goes_on(
    topic: str, value: bytes
) -> None:
    """It used to raise RecursionError from the json fallback and stop the worker."""
    codec = Codec(["a", "b", "c"], ["0", "1"], max_payload_bytes=300_000)
    batch = codec.decode_batch(
        [
            FakeMessage("features", value=feature("ok1", [1, 2, 3]), offset=1),
            FakeMessage(topic, value=value, offset=2),
            FakeMessage("features", value=feature("ok2", [1, 2, 3]), offset=3),
        ]
    )
    assert batch.features.ids == ["ok1", "ok2"]
    [dead] = batch.dead_letters
    assert (dead.reason, dead.source.offset) == (Reason.DECODE, 2)
    assert "\n" not in dead.message


def _explode(*args: object) -> None:
    raise MemoryError("the batch path failed")


def test_the_common_shapes_never_reach_the_per_message_checks(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batch paths take every message in the common shapes: a failure in them would
    fall back silently, correct but several times slower."""
    monkeypatch.setattr(MessageChecks, "_decode_feature", _explode)
    monkeypatch.setattr(MessageChecks, "_decode_feedback", _explode)
    events = [feature(f"e{i}", [i, 2.5, -3]) for i in range(5)]
    events.append(orjson.dumps({"event_id": "ts", "features": [1, 2, 3], "ts": 1.5, "x": {}}))
    labels = [orjson.dumps({"event_id": f"e{i}", "label": "1"}) for i in range(4)]
    labels.append(orjson.dumps({"event_id": "ts", "label": 0, "ts": 2.0}))
    messages = [FakeMessage("features", value=v, offset=n) for n, v in enumerate(events)]
    messages += [FakeMessage("feedback", value=v, offset=n) for n, v in enumerate(labels)]
    batch = codec.decode_batch(messages)
    assert batch.dead_letters == []
    assert batch.features.ids == [f"e{i}" for i in range(5)] + ["ts"]
    assert [(f.event_id, f.label) for f in batch.feedback][-2:] == [("e3", 1), ("ts", 0)]


def test_a_failing_batch_path_leaves_every_message_to_the_per_message_checks(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(decode_module, "decode_plain", _explode)  # no batch path
    batch = codec.decode_batch(
        [
            FakeMessage("features", value=feature("ok1", [1, 2, 3]), offset=1),
            FakeMessage(
                "feedback", value=orjson.dumps({"event_id": "ok1", "label": "1"}), offset=1
            ),
            FakeMessage("features", value=feature("bad", [1, 2]), offset=2),
        ]
    )
    assert batch.features.ids == ["ok1"]
    assert batch.features.X.tolist() == [[1.0, 2.0, 3.0]]
    assert [(f.event_id, f.label) for f in batch.feedback] == [("ok1", 1)]
    assert [d.reason for d in batch.dead_letters] == [Reason.FEATURE_COUNT]


def test_any_exception_while_decoding_one_message_becomes_its_dead_letter(
    codec: Codec, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = codec._fill_row

    def fail_on_bomb(row: np.ndarray, features: list[float]) -> None:
        if features[0] == 13:
            raise MemoryError("boom\nsecond line")
        real(row, features)

    monkeypatch.setattr(codec, "_fill_row", fail_on_bomb)
    monkeypatch.setattr(decode_module, "decode_plain", _explode)  # every message the slow way
    batch = codec.decode_batch(
        [
            FakeMessage("features", value=feature("ok1", [1, 2, 3]), offset=1),
            FakeMessage("features", value=feature("bomb", [13, 2, 3]), offset=2),
            FakeMessage("features", value=feature("ok2", [1, 2, 3]), offset=3),
        ]
    )
    assert batch.features.ids == ["ok1", "ok2"]
    [dead] = batch.dead_letters
    assert (dead.reason, dead.message) == (Reason.DECODE, "MemoryError: boom second line")


KAFKA_TS = DEFAULT_TIMESTAMP_MS / 1000  # FakeMessage's default Kafka timestamp, seconds


@pytest.mark.parametrize("topic", ["features", "feedback"])
@pytest.mark.parametrize(
    "ts",
    [
        b"NaN",
        b"Infinity",
        b"1e400",
        b"1" + b"0" * 400,
        b"%r" % (KAFKA_TS + 301),
        b"32503680000",  # the year 3000
    ],
)
def test_a_ts_not_finite_or_too_far_ahead_is_out_of_range(
    codec: Codec, topic: str, ts: bytes
) -> None:
    body = b'"features": [1, 2, 3]' if topic == "features" else b'"label": "1"'
    value = b'{"event_id": "e", %s, "ts": %s}' % (body, ts)
    batch = codec.decode_batch([FakeMessage(topic, value=value)])
    [dead] = batch.dead_letters
    assert dead.reason is Reason.TS_OUT_OF_RANGE
    assert not batch.features.ids and not batch.feedback


@pytest.mark.parametrize("topic", ["features", "feedback"])
def test_a_ts_within_the_skew_or_in_the_past_or_absent_is_kept(codec: Codec, topic: str) -> None:
    def doc(**ts: float) -> bytes:
        body = {"features": [1, 2, 3]} if topic == "features" else {"label": "1"}
        return orjson.dumps({"event_id": "e", **body, **ts})

    batch = codec.decode_batch(
        [
            FakeMessage(topic, value=doc(ts=KAFKA_TS + 300), offset=0),
            FakeMessage(topic, value=doc(ts=5.0), offset=1),
            FakeMessage(topic, value=doc(), offset=2),
        ]
    )
    assert not batch.dead_letters
    kept = batch.features.ts.tolist() if topic == "features" else [f.ts for f in batch.feedback]
    assert kept == [KAFKA_TS + 300, 5.0, KAFKA_TS]


def test_the_skew_bound_is_configurable() -> None:
    codec = Codec(["a", "b", "c"], ["0", "1"], max_future_skew_s=10.0)
    batch = codec.decode_batch(
        [FakeMessage("features", value=feature("e", [1, 2, 3], ts=KAFKA_TS + 11))]
    )
    assert [d.reason for d in batch.dead_letters] == [Reason.TS_OUT_OF_RANGE]


def test_a_dead_letter_keeps_a_bounded_payload_with_its_size_and_sha256() -> None:
    codec = Codec(["a", "b", "c"], ["0", "1"], dead_letter_payload_bytes=100)
    payload = "é".encode() * 300  # 600 bytes of UTF-8: the cut must not split a character
    [dead] = codec.decode_batch([FakeMessage("features", value=payload)]).dead_letters
    record = orjson.loads(codec.encode_dead_letter(dead, now=1.0))
    assert_valid("dead-letter", record)
    assert record["payload"] == "é" * 50
    assert record["payload_size"] == 600
    assert record["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    assert record["payload_truncated"] is True


def test_a_small_dead_letter_is_whole_and_a_tombstone_has_no_payload(codec: Codec) -> None:
    batch = codec.decode_batch(
        [
            FakeMessage("features", value=b"{oops", offset=0),
            FakeMessage("features", value=None, offset=1),
        ]
    )
    small, tombstone = (
        orjson.loads(codec.encode_dead_letter(d, now=1.0)) for d in batch.dead_letters
    )
    for record in (small, tombstone):
        assert_valid("dead-letter", record)
    assert (small["payload"], small["payload_truncated"], small["payload_size"]) == (
        "{oops",
        False,
        5,
    )
    assert tombstone["payload"] is None and tombstone["payload_sha256"] is None
    assert (tombstone["payload_encoding"], tombstone["payload_size"]) == ("none", 0)


def test_an_integral_float_or_padded_label_is_its_class() -> None:
    codec = Codec(["a"], ["0", "1"])
    labels = [b'{"event_id": "e", "label": %s}' % label for label in (b"1.0", b"1e0", b"-0.0")]
    batch = codec.decode_batch(
        [FakeMessage("feedback", value=v, offset=i) for i, v in enumerate(labels)]
    )
    assert [f.label for f in batch.feedback] == [1, 1, 0]
    padded = FakeMessage("feedback", value=b'{"event_id": "e", "label": " 1\\t"}')
    assert [f.label for f in codec.decode_batch([padded]).feedback] == [1]  # as files' classes
    for label, reason in ((b"3.0", Reason.UNKNOWN_LABEL), (b"1.5", Reason.SCHEMA)):
        value = b'{"event_id": "e", "label": %s}' % label
        [dead] = codec.decode_batch([FakeMessage("feedback", value=value)]).dead_letters
        assert dead.reason is reason


def test_an_echoed_label_is_cut_in_the_message() -> None:
    codec = Codec(["a", "b", "c"], ["0", "1"], max_payload_bytes=1_000_000)
    value = orjson.dumps({"event_id": "e", "label": "L" * 200_000})
    [dead] = codec.decode_batch([FakeMessage("feedback", value=value)]).dead_letters
    assert dead.reason is Reason.UNKNOWN_LABEL
    assert len(dead.message) < 300
    record = orjson.loads(codec.encode_dead_letter(dead, now=1.0))
    assert_valid("dead-letter", record)


def test_a_huge_message_is_cut_when_encoded() -> None:
    dead = DeadLetter(SourcePosition("f", 0, 0), None, Reason.DECODE, "x\n" * 100_000, b"{")
    record = orjson.loads(encode_dead_letter(dead, now=1.0))
    assert_valid("dead-letter", record)
    assert record["error"]["message"].endswith("(200000 chars)")
    assert "\n" not in record["error"]["message"]


def test_a_large_key_is_cut_and_the_record_says_so() -> None:
    sink = ListSink()
    codec = Codec(["a", "b", "c"], ["0", "1"])
    publisher = Publisher(sink, codec, TopicNames(), "m", "1")
    key = b"K" * 100_000
    small = DeadLetter(SourcePosition("f", 0, 1), b"k", Reason.DECODE, "bad", b"{")
    large = DeadLetter(SourcePosition("f", 0, 2), key, Reason.DECODE, "bad", b"{")
    publisher.publish(Outputs(dead_letters=[small, large]))
    [(_, small_key, small_value), (_, large_key, large_value)] = sink.records
    assert small_key == b"k" and "key_size" not in orjson.loads(small_value)
    assert large_key == key[:1024]
    record = orjson.loads(large_value)
    assert_valid("dead-letter", record)
    assert record["key_size"] == 100_000


def test_the_publisher_encodes_dead_letters_with_the_configured_payload_limit() -> None:
    sink = ListSink()
    codec = Codec(["a", "b", "c"], ["0", "1"], dead_letter_payload_bytes=10)
    publisher = Publisher(sink, codec, TopicNames(), "m", "1")
    dead = DeadLetter(SourcePosition("f", 0, 1), b"k", Reason.DECODE, "bad", b"x" * 1000)
    publisher.publish(Outputs(dead_letters=[dead]))
    [(topic, _, value)] = sink.records
    assert topic == TopicNames().dead_letter
    record = orjson.loads(value)
    assert (record["payload"], record["payload_size"]) == ("x" * 10, 1000)


class ListSink:
    """The producer seen by the publisher, keeping what it is given."""

    def __init__(self) -> None:
        self.records: list[tuple[str, bytes | None, bytes]] = []

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        self.records.append((topic, key, value))

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        self.records += [(topic, key, value) for key, value in records]


_ADVERSARIAL = [
    b"\x01" * 250_000,  # valid UTF-8, six times larger once escaped
    b"\xff" * 900_000,  # not UTF-8: base64
    b'"' * 900_000,  # escaped twice as large
    "\u2028".encode() * 300_000,
    b"\x00\x1f\\" * 300_000,
    b"",
]


@pytest.mark.parametrize("payload_bytes", [0, 1, 65_536, 1_000_000, 10_000_000])
@pytest.mark.parametrize("payload", _ADVERSARIAL, ids=lambda p: f"{len(p)}B-{p[:1]!r}")
def test_an_encoded_dead_letter_always_fits_the_producer_limit(
    payload: bytes, payload_bytes: int
) -> None:
    """Whatever the payload, message, key and configured payload limit: value + key stay
    below the producer's default message.max.bytes (1,000,000)."""
    key = b"\x01" * 100_000
    dead = DeadLetter(
        SourcePosition("f", 0, 1), key, Reason.UNKNOWN_LABEL, "\x01" * 500_000, payload
    )
    value = encode_dead_letter(dead, now=1.0, payload_bytes=payload_bytes)
    out_key = dead_letter_key(key)
    assert out_key is not None
    assert len(value) + len(out_key) < RECORD_BUDGET_BYTES < 1_000_000
    record = orjson.loads(value)
    assert_valid("dead-letter", record)
    assert record["payload_size"] == len(payload)
    assert record["payload_sha256"] == hashlib.sha256(payload).hexdigest()
    kept = (
        base64.b64decode(record["payload"])
        if record["payload_encoding"] == "base64"
        else record["payload"].encode()
    )
    assert payload.startswith(kept)
    assert record["payload_truncated"] is (len(kept) < len(payload))


# -- missing values (issue 13, item 5) ----------------------------------------------------------


@pytest.mark.parametrize(
    "features",
    [[1, None, 3], {"a": 1, "b": None, "c": 3}, {"a": 1, "c": 3}],
    ids=["null-in-list", "null-in-dict", "absent-name"],
)
def test_a_missing_feature_is_dead_lettered_by_default(codec: Codec, features: object) -> None:
    batch = codec.decode_batch([FakeMessage("features", value=feature("x", features))])
    assert len(batch.features) == 0
    (dead,) = batch.dead_letters
    assert dead.reason is Reason.MISSING and "'b'" in dead.message


@pytest.mark.parametrize(
    "features",
    [[1, None, 3], {"a": 1, "b": None, "c": 3}, {"a": 1, "c": 3}],
    ids=["null-in-list", "null-in-dict", "absent-name"],
)
def test_with_impute_a_missing_feature_passes_as_nan(features: object) -> None:
    codec = Codec(["a", "b", "c"], ["0", "1"], missing="impute")
    batch = codec.decode_batch(
        [
            FakeMessage("features", value=feature("x", features)),
            FakeMessage("features", value=b'{"event_id": "y", "features": [NaN, 1, 2]}', offset=1),
        ]
    )
    assert batch.features.ids == ["x"]
    assert batch.features.X[0, 0] == 1 and np.isnan(batch.features.X[0, 1])
    # a NaN that was sent is still bad input, not a missing value
    assert [d.reason for d in batch.dead_letters] == [Reason.NON_FINITE]


def test_imputed_values_are_embedded_as_the_source_mean_and_counted_in_drift_reports() -> None:
    from streamapp.drift.monitor import DriftMonitor
    from streamapp.drift.stats import ReferenceProfile
    from streamapp.model.backbone import Embedder, MLPBackbone

    rng = np.random.default_rng(0)
    source = rng.normal(size=(200, 3)) + np.array([0.0, 5.0, 0.0])
    profile = ReferenceProfile.from_data(source, np.zeros(200, np.int64), 2)
    embed = Embedder(MLPBackbone(3, [4], 2), np.zeros(3), np.ones(3), impute=profile.mean)
    X = np.array([[1.0, np.nan, 3.0], [1.0, profile.mean[1], 3.0]], np.float32)
    Z = embed(X)
    np.testing.assert_array_equal(Z[0], Z[1])
    monitor = DriftMonitor(profile, ["a", "b", "c"], ["0", "1"])
    monitor.update_events(X, np.zeros(2, np.int64), np.zeros(2))
    report = monitor.report(now=1.0)
    assert report["imputed"] == {
        "window": {"a": 0, "b": 1, "c": 0},
        "total": {"a": 0, "b": 1, "c": 0},
    }
    assert np.isfinite(report["counts"]["sum"]).all()
    monitor.update_events(X[:1], np.zeros(1, np.int64), np.zeros(1))
    second = monitor.report(now=2.0)
    assert second["imputed"]["window"]["b"] == 1 and second["imputed"]["total"]["b"] == 2
