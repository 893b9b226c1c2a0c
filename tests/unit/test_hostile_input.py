"""No bytes on an input topic can crash the decoder: every message is an event, a label or a
dead letter, and every dead letter fits the producer's message limit (issue 11)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import orjson
import pytest

from streamapp.codec import Codec, dead_letter_key
from streamapp.events import DeadLetter, Reason
from tests.conftest import assert_valid
from tests.fakes import FakeMessage

PRODUCER_LIMIT = 1_000_000  # librdkafka's default message.max.bytes
YEAR_3000 = 32_503_680_000.0


@dataclass(frozen=True, slots=True)
class Hostile:
    """One input: its topic kind, key, value, headers and what it is (for failure messages);
    ``reason`` is the dead-letter reason expected from the codec, ``None`` when it decodes."""

    name: str
    kind: str  # "features" or "feedback"
    value: bytes | None
    reason: str | None
    key: bytes | None = b"k"
    headers: tuple[tuple[str, bytes], ...] = ()


def corpus(n_features: int) -> list[Hostile]:
    """Every kind of hostile input the issue lists, for a model with ``n_features``."""
    ok = b"[" + b", ".join([b"0.5"] * n_features) + b"]"
    deep = b"[" * 50_000 + b"]" * 50_000

    def event(event_id: bytes, features: bytes = ok, extra: bytes = b"") -> bytes:
        return b'{"event_id": %s, "features": %s%s}' % (event_id, features, extra)

    def row(token: bytes) -> bytes:
        return b"[" + b", ".join([token] + [b"0.5"] * (n_features - 1)) + b"]"

    return [
        Hostile("100k open brackets", "features", b"[" * 100_000, "decode"),
        Hostile("deep array in an event", "features", event(b'"h-deep"', deep), "decode"),
        Hostile(
            "deep array in a label", "feedback", b'{"event_id": "x", "label": %s}' % deep, "decode"
        ),
        Hostile("BOM", "features", b"\xef\xbb\xbf" + event(b'"h-bom"'), "decode"),
        Hostile("duplicate keys", "features", event(b'"h-dup1", "event_id": "h-dup2"'), None),
        Hostile("1e400", "features", event(b'"h-1e400"', row(b"1e400")), "non_finite"),
        Hostile(
            "huge int", "features", event(b'"h-bigint"', row(b"1" + b"0" * 400)), "value_range"
        ),
        Hostile(
            "2**64 int", "features", event(b'"h-u64"', row(b"18446744073709551617")), "value_range"
        ),
        Hostile("string feature", "features", event(b'"h-str"', row(b'"0.5"')), "schema"),
        Hostile("boolean feature", "features", event(b'"h-bool"', row(b"true")), "schema"),
        Hostile("null feature", "features", event(b'"h-null"', row(b"null")), "missing"),
        Hostile("empty list", "features", event(b'"h-empty"', b"[]"), "schema"),
        Hostile("top-level array", "features", ok, "schema"),
        Hostile("tombstone", "features", None, "decode"),
        Hostile("tombstone label", "feedback", None, "decode"),
        Hostile(
            "binary headers",
            "features",
            event(b'"h-headers"'),
            None,
            headers=(("bin", b"\xff\x00\xfe"), ("", b"")),
        ),
        Hostile("100 KB id", "features", event(b'"%s"' % (b"i" * 100_000)), "schema"),
        Hostile("100 KB key", "features", event(b'"h-bigkey"'), None, key=b"K" * 100_000),
        Hostile(
            "escaped control characters", "features", event(b'"h-\\u0000\\u0001\\u001f"'), None
        ),
        Hostile("raw control characters", "features", event(b'"h-\x00\x01"'), "decode"),
        Hostile("lone surrogate id", "features", event(b'"h-\\ud800"'), "encoding"),
        Hostile(
            "lone surrogate label id",
            "feedback",
            b'{"event_id": "x\\udfff", "label": "0"}',
            "encoding",
        ),
        Hostile("surrogate pair id", "features", event(b'"h-\\ud83d\\ude00"'), None),
        Hostile("250 KB of \\x01", "features", b"\x01" * 250_000, "decode"),
        Hostile("900 KB not UTF-8", "features", b"\xff\xfe" * 450_000, "oversized"),
        Hostile(
            "far-future ts",
            "features",
            event(b'"h-future"', ok, b', "ts": %r' % YEAR_3000),
            "ts_out_of_range",
        ),
        Hostile(
            "far-future label",
            "feedback",
            b'{"event_id": "x", "label": "0", "ts": %r}' % YEAR_3000,
            "ts_out_of_range",
        ),
        Hostile("NaN ts", "features", event(b'"h-nan-ts"', ok, b', "ts": NaN'), "ts_out_of_range"),
        Hostile(
            "1e400 ts",
            "feedback",
            b'{"event_id": "x", "label": "0", "ts": 1e400}',
            "ts_out_of_range",
        ),
        Hostile("integer id", "features", event(b"4242"), "schema"),
        Hostile(
            "integer id beyond 2**53",
            "feedback",
            b'{"event_id": 123456789012345678901234567890, "label": "0"}',
            "schema",
        ),
        Hostile(
            "200 KB unknown label",
            "feedback",
            b'{"event_id": "x", "label": "%s"}' % (b"L" * 200_000),
            "unknown_label",
        ),
    ]


def _mutate(value: bytes, rng: np.random.Generator) -> bytes:
    """Zero to three random edits: flip, insert, delete, repeat a slice, nest, truncate."""
    data = bytearray(value)
    for _ in range(int(rng.integers(0, 4))):
        at = int(rng.integers(0, len(data) + 1))
        edit = int(rng.integers(0, 6))
        if edit == 0 and data:
            data[min(at, len(data) - 1)] = int(rng.integers(0, 256))
        elif edit == 1:
            data[at:at] = bytes([int(rng.integers(0, 256))])
        elif edit == 2:
            del data[at : at + int(rng.integers(1, 8))]
        elif edit == 3:
            data[at:at] = data[at : at + int(rng.integers(1, 64))] * int(rng.integers(2, 50))
        elif edit == 4:
            depth = int(rng.integers(1, 3000))
            data[at:at] = b"[" * depth + b"]" * int(rng.integers(0, depth + 1))
        else:
            del data[at:]
    return bytes(data)


def random_inputs(n: int, n_features: int, seed: int = 11) -> Iterator[Hostile]:
    """``n`` random inputs: random bytes, or a valid event or label randomly mutated."""
    rng = np.random.default_rng(seed)
    for i in range(n):
        kind = "feedback" if rng.random() < 0.3 else "features"
        if rng.random() < 0.2:
            value = rng.integers(0, 256, int(rng.integers(0, 2_000)), dtype=np.uint8).tobytes()
        elif kind == "features":
            features = np.round(rng.normal(size=n_features), 3).tolist()
            value = _mutate(orjson.dumps({"event_id": f"m{i}", "features": features}), rng)
        else:
            value = _mutate(orjson.dumps({"event_id": f"m{i}", "label": "0", "ts": 1.0}), rng)
        yield Hostile(f"random {i}", kind, value, reason=None)


def _codec(n_features: int) -> Codec:
    return Codec([f"f{i}" for i in range(n_features)], ["0", "1"])


def _messages(inputs: list[Hostile], first_offset: int = 0) -> list[FakeMessage]:
    return [
        FakeMessage(
            h.kind,
            value=h.value,
            offset=first_offset + i,
            key=h.key,
            timestamp_ms=1_700_000_000_000,
        )
        for i, h in enumerate(inputs)
    ]


def _assert_fits(dead: DeadLetter, codec: Codec) -> None:
    value = codec.encode_dead_letter(dead, now=1.0)
    key = dead_letter_key(dead.key)
    assert len(value) + len(key or b"") < PRODUCER_LIMIT, dead.reason
    record = orjson.loads(value)
    assert_valid("dead-letter", record)
    assert "\n" not in record["error"]["message"]


def test_every_hostile_kind_is_decoded_or_dead_lettered_with_its_reason() -> None:
    inputs = [
        Hostile(
            "valid", "features", orjson.dumps({"event_id": "before", "features": [1] * 4}), None
        )
    ]
    inputs += corpus(4)
    inputs.append(
        Hostile("valid", "features", orjson.dumps({"event_id": "after", "features": [1] * 4}), None)
    )
    codec = _codec(4)
    batch = codec.decode_batch(_messages(inputs))
    reasons = {d.source.offset: d.reason.value for d in batch.dead_letters}
    decoded = {s.offset for s in batch.features.sources} | {f.source.offset for f in batch.feedback}  # type: ignore[union-attr]
    assert not reasons.keys() & decoded
    for offset, hostile in enumerate(inputs):
        assert reasons.get(offset) == hostile.reason, hostile.name
        assert (offset in decoded) is (hostile.reason is None), hostile.name
    assert batch.features.ids[0] == "before" and batch.features.ids[-1] == "after"
    for dead in batch.dead_letters:
        _assert_fits(dead, codec)


def test_thousands_of_random_inputs_never_raise_and_each_dead_letter_fits() -> None:
    inputs = list(random_inputs(3_000, 4))
    codec = _codec(4)
    outcomes = [0] * len(inputs)
    for start in range(0, len(inputs), 100):  # batches, as the worker polls them
        chunk = _messages(inputs[start : start + 100], first_offset=start)
        batch = codec.decode_batch(chunk)
        sources = batch.features.sources + [f.source for f in batch.feedback]
        sources += [d.source for d in batch.dead_letters]
        for source in sources:
            outcomes[source.offset] += 1  # type: ignore[union-attr]
        for dead in batch.dead_letters:
            _assert_fits(dead, codec)
        for event_id in batch.features.ids + [f.event_id for f in batch.feedback]:
            event_id.encode()  # what is accepted can be written out again
    assert outcomes == [1] * len(inputs)  # each input exactly once: event, label or dead letter


def test_the_random_inputs_reach_past_the_parser() -> None:
    """The randomized test means something only if mutations produce every outcome: valid
    events and labels, and rejects from the parser, the schema and the later checks."""
    inputs = list(random_inputs(3_000, 4))
    batch = _codec(4).decode_batch(_messages(inputs))
    reasons = {d.reason for d in batch.dead_letters}
    assert len(batch.features) > 100 and len(batch.feedback) > 50
    assert {Reason.DECODE, Reason.ENCODING, Reason.SCHEMA, Reason.FEATURE_COUNT} <= reasons


@pytest.mark.parametrize("hostile", corpus(4), ids=lambda h: h.name)
def test_the_corpus_value_is_what_it_claims(hostile: Hostile) -> None:
    """Guards the corpus itself: the JSON kinds that must decode do decode with Python's json."""
    if hostile.reason is None and hostile.value is not None:
        assert isinstance(json.loads(hostile.value), dict)
