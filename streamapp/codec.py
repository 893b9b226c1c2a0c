"""Bytes <-> events with orjson, validated against ``schemas/``.

Decoding never raises on bad input: every message becomes either part of the batch or a
:class:`~streamapp.events.DeadLetter` with its reason.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import itertools
import json
import logging
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TypeVar

import fastjsonschema
import numpy as np
import orjson

from streamapp.events import (
    DeadLetter,
    FeatureBlock,
    Feedback,
    JoinedExamples,
    PredictionBlock,
    Reason,
    SourcePosition,
    position_of,
)
from streamapp.schemas import validator

__all__ = [
    "UnknownLabelError",
    "DEAD_LETTER_PAYLOAD_BYTES",
    "RECORD_BUDGET_BYTES",
    "Codec",
    "DecodedBatch",
    "Message",
    "MissingPolicy",
    "dead_letter_key",
    "encode_dead_letter",
    "encode_json",
    "one_line",
]

logger = logging.getLogger(__name__)

T = TypeVar("T")

MissingPolicy = Literal["dead-letter", "impute"]


class Message(Protocol):
    """The part of ``confluent_kafka.Message`` the codec reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class UnknownLabelError(ValueError):
    """A training example's label is not one of the model's classes."""


class _RejectError(Exception):
    """Internal: carries a dead-letter reason out of the per-message checks."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class DecodedBatch:
    """One polled batch after decoding: feature columns, feedback, rejects.

    The input's positions and values ride along (plain tuples and bytes, references, no
    copy, no Kafka message): a dead letter found later keeps its payload."""

    features: FeatureBlock
    feedback: list[Feedback] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    positions: list[tuple[str, int, int]] = field(default_factory=list)
    payloads: list[bytes | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.features) + len(self.feedback) + len(self.dead_letters)

    def payload_at(self, source: SourcePosition) -> bytes | None:
        """The value of the input read at ``source``; None when this batch does not hold it.
        A scan: only rare rejects (a duplicate event) ask."""
        for position, payload in zip(self.positions, self.payloads, strict=True):
            if position == source:
                return payload
        return None


def encode_json(value: Any) -> bytes:
    """orjson with numpy support; the one encoder for every output topic."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


# Well below the producer's default message.max.bytes (1,000,000) for value + key + headers.
RECORD_BUDGET_BYTES = 900_000
DEAD_LETTER_PAYLOAD_BYTES = 65_536  # the default of ``Settings.dead_letter_payload_bytes``
_MAX_MESSAGE_CHARS = 1_000  # an error message echoes input (a label, an id): bounded
_MAX_KEY_BYTES = 1_024  # a larger key is cut, and the record says so


def encode_dead_letter(
    dead: DeadLetter,
    now: float | None = None,
    *,
    payload_bytes: int = DEAD_LETTER_PAYLOAD_BYTES,
) -> bytes:
    """The dead-letter record for ``dead``: at most ``payload_bytes`` of the payload (text, or
    base64 when not UTF-8) with its original size and sha256, a bounded one-line message.

    Whatever the payload, the record plus its key (:func:`dead_letter_key`) stays below
    :data:`RECORD_BUDGET_BYTES`: control characters re-escape six times larger in JSON, so a
    record over budget is re-encoded with half the payload until it fits.

    >>> from streamapp.events import Reason, SourcePosition
    >>> dead = DeadLetter(SourcePosition("f", 0, 1), None, Reason.DECODE, "bad", b"\\x01" * 10)
    >>> record = orjson.loads(encode_dead_letter(dead, now=0.0, payload_bytes=4))
    >>> record["payload"], record["payload_size"], record["payload_truncated"]
    ('\\x01\\x01\\x01\\x01', 10, True)
    """
    keep = max(0, payload_bytes)
    while True:
        value = _dead_letter_record(dead, now, keep)
        if len(value) <= RECORD_BUDGET_BYTES - _MAX_KEY_BYTES or keep == 0:
            return value
        keep //= 2


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The original key when small, else its first :data:`_MAX_KEY_BYTES` bytes."""
    return key if key is None or len(key) <= _MAX_KEY_BYTES else key[:_MAX_KEY_BYTES]


def _dead_letter_record(dead: DeadLetter, now: float | None, keep: int) -> bytes:
    payload = dead.payload
    record: dict[str, Any] = {
        "source": {
            "topic": dead.source.topic,
            "partition": dead.source.partition,
            "offset": dead.source.offset,
        },
        "error": {"type": dead.reason.value, "message": one_line(dead.message)},
    }
    if payload is None:
        record |= {"payload": None, "payload_encoding": "none", "payload_size": 0}
        record |= {"payload_sha256": None, "payload_truncated": False}
    else:
        text, encoding = _payload_text(payload, keep)
        record |= {"payload": text, "payload_encoding": encoding, "payload_size": len(payload)}
        record["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        record["payload_truncated"] = len(payload) > keep
    if dead.key is not None and len(dead.key) > _MAX_KEY_BYTES:
        record["key_size"] = len(dead.key)  # the record's key is cut to its first bytes
    record["ts"] = time.time() if now is None else now
    return encode_json(record)


def _payload_text(payload: bytes, keep: int) -> tuple[str, str]:
    """The first ``keep`` bytes as text when the whole payload is UTF-8, else as base64."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(payload[:keep]).decode("ascii"), "base64"
    # the payload is valid UTF-8, so "ignore" only drops a character cut in half at the end
    return payload[:keep].decode("utf-8", "ignore"), "utf-8"


def one_line(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with the original length noted.

    >>> one_line("a\\nb")
    'a b'
    >>> one_line("x" * 20, limit=5)
    'xxxxx... (20 chars)'
    """
    short = " ".join(text[: limit + 1].split())
    return short if len(text) <= limit else f"{short[:limit]}... ({len(text)} chars)"


class Codec:
    """Decodes input messages for one model's feature layout and classes.

    Parameters
    ----------
    feature_names
        The model's input features, in order.
    classes
        The model's classes; labels are matched by their string form.
    features_topic, feedback_topic
        Which topic carries which kind of message.
    max_abs_value
        Feature values beyond this magnitude are rejected (``value_range``).
    max_payload_bytes
        Larger messages are rejected before parsing (``oversized``).
    max_future_skew_s
        An event or label whose ``ts`` is further ahead of its Kafka timestamp is rejected
        (``ts_out_of_range``): one bad clock must not move stream time into the future.
    dead_letter_payload_bytes
        A dead letter keeps at most this many bytes of its payload.
    missing
        A ``null`` or absent feature: ``"dead-letter"`` (reason ``missing``) or ``"impute"``
        (the value becomes NaN, which the embedder replaces by the source mean and the drift
        monitor counts per feature).
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        classes: Sequence[str],
        *,
        features_topic: str = "features",
        feedback_topic: str = "feedback",
        max_abs_value: float = 1e6,
        max_payload_bytes: int = 262_144,
        max_future_skew_s: float = 300.0,
        dead_letter_payload_bytes: int = DEAD_LETTER_PAYLOAD_BYTES,
        missing: MissingPolicy = "dead-letter",
    ) -> None:
        if missing not in ("dead-letter", "impute"):
            raise ValueError(f"missing must be 'dead-letter' or 'impute', not {missing!r}")
        self.missing = missing
        self.feature_names = list(feature_names)
        self.classes = [str(c) for c in classes]
        self.features_topic = features_topic
        self.feedback_topic = feedback_topic
        self.max_abs_value = max_abs_value
        self.max_payload_bytes = max_payload_bytes
        self.max_future_skew_s = max_future_skew_s
        self.dead_letter_payload_bytes = dead_letter_payload_bytes
        self._feature_index = {name: i for i, name in enumerate(self.feature_names)}
        self._label_index = {name: i for i, name in enumerate(self.classes)}
        self._validate_feature = validator("feature-event")
        self._validate_feedback = validator("feedback")

    # -- decoding ---------------------------------------------------------------------------

    def decode_batch(self, messages: Iterable[Message], now: float | None = None) -> DecodedBatch:
        """Split ``messages`` into feature columns, feedback and dead letters.

        The common shapes are decoded a batch at a time (:meth:`_plain_features`,
        :meth:`_plain_feedback`); any message they do not take goes through the per-message
        checks, which accept or reject it with its reason. Feature values are written
        straight into one preallocated matrix; the finite and range checks run on the whole
        matrix at once.
        """
        now = time.time() if now is None else now
        messages = list(messages)
        positions = [position_of(m) for m in messages]
        batch = DecodedBatch(
            FeatureBlock.empty(len(self.feature_names)),
            positions=positions,
            payloads=[m.value() for m in messages],
        )
        event_rows: list[int] = []
        label_rows: list[int] = []
        feedback_topic = self.feedback_topic
        for i, (topic, _, _) in enumerate(positions):
            (label_rows if topic == feedback_topic else event_rows).append(i)
        if label_rows:
            self._decode_feedback_rows(messages, positions, label_rows, now, batch)
        if event_rows:
            batch.features = self._decode_feature_rows(messages, positions, event_rows, now, batch)
        if batch.dead_letters and event_rows and label_rows:  # keep dead letters in input order
            order = {SourcePosition(*p): i for i, p in enumerate(positions)}
            batch.dead_letters.sort(key=lambda dead: order[dead.source])
        return batch

    def _decode_feature_rows(
        self,
        messages: list[Message],
        positions: list[tuple[str, int, int]],
        rows: list[int],
        now: float,
        batch: DecodedBatch,
    ) -> FeatureBlock:
        """The feature events among ``messages`` (at ``rows``) as a block; the others are
        dead letters in ``batch``."""
        msgs = [messages[i] for i in rows]
        X = np.empty((len(msgs), len(self.feature_names)), np.float64)
        absent = np.zeros(X.shape, np.bool_)  # imputed (missing) values, not bad ones
        try:
            ids, ts = self._plain_features(msgs, X, now)
        except Exception:  # a shortcut only: the per-message checks decide every message
            logger.debug("batch decoding failed; decoding message by message", exc_info=True)
            ids, ts = [None] * len(msgs), np.full(len(msgs), np.nan)
        ok = np.ones(len(msgs), np.bool_)
        undecided = [j for j, event_id in enumerate(ids) if event_id is None] if None in ids else []
        for j in undecided:  # not in the common shape: checked one by one
            decoded = self._or_dead_letter(
                batch,
                msgs[j],
                functools.partial(self._decode_feature, msgs[j], X[j], absent[j], now),
            )
            if decoded is None:
                ok[j] = False
            else:
                ids[j], ts[j] = decoded
        if not ok.all():
            keep = np.flatnonzero(ok)
            X, absent, ts = X[keep], absent[keep], ts[keep]
            msgs, ids, rows = (
                [msgs[j] for j in keep],
                [ids[j] for j in keep],
                [rows[j] for j in keep],
            )
        sources = list(map(SourcePosition._make, map(positions.__getitem__, rows)))
        return self._feature_block(X, absent, msgs, ids, ts, sources, batch)

    def _plain_features(
        self, msgs: list[Message], X: np.ndarray, now: float
    ) -> tuple[list[str | None], np.ndarray]:
        """``(event ids, event times)`` of the feature events in the common shape, decoded
        together: a JSON object whose ``features`` is a list of exactly the model's number
        of JSON numbers, with a valid ``event_id`` and ``ts`` (or none); their values go to
        ``X``. The id of any other message is ``None``: the per-message checks decide it.
        Never accepts what the schema and those checks reject (a test holds it to that)."""
        docs = _parse_all([m.value() for m in msgs], self.max_payload_bytes)
        width = len(self.feature_names)
        ids: list[str | None] = [None] * len(msgs)
        stamps: list[float | int] = []
        vectors: list[list[Any]] = []
        names: list[str] = []
        taken: list[int] = []
        for j, doc in enumerate(docs):
            if type(doc) is not dict:
                continue
            features, event_id, stamp = doc.get("features"), doc.get("event_id"), doc.get("ts", -1)
            if (
                type(features) is list
                and len(features) == width
                and type(event_id) is str
                and 0 < len(event_id) <= 256
                and type(stamp) in _NUMBER_TYPES
                and (stamp >= 0 or ("ts" not in doc))
            ):
                taken.append(j)
                vectors.append(features)
                stamps.append(stamp)
                names.append(event_id)
        ts = np.full(len(msgs), np.nan)
        if not taken:
            return ids, ts
        if not set(map(type, itertools.chain.from_iterable(vectors))) <= _NUMBER_TYPES:
            numeric = [set(map(type, v)) <= _NUMBER_TYPES for v in vectors]
            taken = list(itertools.compress(taken, numeric))
            vectors = list(itertools.compress(vectors, numeric))
            stamps = list(itertools.compress(stamps, numeric))
            names = list(itertools.compress(names, numeric))
            if not taken:
                return ids, ts
        try:
            values = np.array(vectors, np.float64)
            event_ts = np.array(stamps, np.float64)
        except OverflowError:  # an integer beyond float range: the per-message checks say so
            return ids, ts
        index = np.asarray(taken)
        kafka_ts = _kafka_times(msgs, now)[index]
        event_ts = np.where(event_ts < 0, kafka_ts, event_ts)  # no ts: the Kafka timestamp
        good = np.isfinite(event_ts) & (event_ts <= kafka_ts + self.max_future_skew_s)
        if not good.all():
            index, values, event_ts = index[good], values[good], event_ts[good]
            names = list(itertools.compress(names, good.tolist()))
        X[index] = values
        ts[index] = event_ts
        for j, name in zip(index.tolist(), names, strict=True):
            ids[j] = name
        return ids, ts

    def _decode_feedback_rows(
        self,
        messages: list[Message],
        positions: list[tuple[str, int, int]],
        rows: list[int],
        now: float,
        batch: DecodedBatch,
    ) -> None:
        """The labels among ``messages`` (at ``rows``) into ``batch.feedback``, or its dead
        letters."""
        try:
            docs = _parse_all([messages[i].value() for i in rows], self.max_payload_bytes)
        except Exception:  # a shortcut only: the per-message checks decide every message
            docs = [None] * len(rows)
        for i, doc in zip(rows, docs, strict=True):
            msg = messages[i]
            try:
                feedback = self._plain_feedback(doc, msg, now, positions[i])
            except Exception:
                feedback = None
            if feedback is not None:
                batch.feedback.append(feedback)
                continue
            label = self._or_dead_letter(
                batch, msg, functools.partial(self._decode_feedback, msg, now)
            )
            if label is not None:
                batch.feedback.append(label)

    def _plain_feedback(
        self, doc: Any, msg: Message, now: float, position: tuple[str, int, int]
    ) -> Feedback | None:
        """A label in the common shape (valid id, a known label, a valid ``ts`` or none),
        else ``None`` for the per-message checks to decide."""
        if type(doc) is not dict:
            return None
        event_id, label, stamp = doc.get("event_id"), doc.get("label"), doc.get("ts", -1.0)
        if not (type(event_id) is str and 0 < len(event_id) <= 256):
            return None
        kind = type(label)
        index = (
            self._label_index.get(label if kind is str else str(label))
            if kind in (str, int)
            else None
        )
        if index is None or (type(stamp) is not float and type(stamp) is not int):
            return None
        kafka_ts = _kafka_time(msg, now)
        if stamp == -1.0 and "ts" not in doc:
            return Feedback(event_id, index, kafka_ts, SourcePosition(*position))
        ts = float(stamp) if -(2**53) < stamp < 2**53 else math.inf
        if not (0 <= ts <= kafka_ts + self.max_future_skew_s):  # NaN fails too
            return None
        return Feedback(event_id, index, ts, SourcePosition(*position))

    def _feature_block(
        self,
        X: np.ndarray,
        absent: np.ndarray,
        msgs: list[Message],
        ids: list[Any],
        ts: np.ndarray,
        sources: list[SourcePosition],
        batch: DecodedBatch,
    ) -> FeatureBlock:
        """The valid rows as a block; rows with NaN/inf or out-of-range values are rejected
        (a missing value under ``missing=impute`` is NaN on purpose)."""
        finite = np.isfinite(X)
        in_range = (np.abs(np.where(finite, X, 0.0)) <= self.max_abs_value).all(axis=1)
        finite = (finite | absent).all(axis=1)
        good = finite & in_range
        if not good.all():
            for i in np.flatnonzero(~good):
                reject = (
                    _RejectError(Reason.NON_FINITE, "features contain NaN or infinity")
                    if not finite[i]
                    else _RejectError(
                        Reason.VALUE_RANGE, f"a feature exceeds |{self.max_abs_value:g}|"
                    )
                )
                self._reject(batch, msgs[i], reject)
            keep = np.flatnonzero(good)
            X, ts = X[good], ts[good]
            msgs, ids, sources = (
                [msgs[i] for i in keep],
                [ids[i] for i in keep],
                [sources[i] for i in keep],
            )
        return FeatureBlock(ids, [m.key() for m in msgs], X.astype(np.float32), ts, sources)

    def _decode_feature(
        self, msg: Message, row: np.ndarray, absent: np.ndarray, now: float
    ) -> tuple[str, float]:
        """``(event_id, event time)`` of a feature event whose values are written to ``row``
        (``absent`` marks the missing ones under ``missing=impute``)."""
        doc = self._parse(msg.value())
        features = doc.get("features") if isinstance(doc, dict) else None
        if not self._is_plain_feature_event(doc, features):
            self._validate(self._validate_feature, doc)
        event_ts = self._event_time(doc, msg, now)
        self._fill_row(row, self._fill_missing(features, absent))
        return doc["event_id"], event_ts

    def _fill_missing(
        self, features: list[Any] | dict[str, Any], absent: np.ndarray
    ) -> list[Any] | dict[str, Any]:
        """``features`` with each null or absent value NaN (``impute``), else a ``missing``
        rejection. Extra names and a wrong count are left to :meth:`_fill_row`."""
        if isinstance(features, dict):
            if not features.keys() <= self._feature_index.keys():
                return features  # unexpected names: feature_names
            gaps = [n for n in self.feature_names if features.get(n) is None]
        else:
            if len(features) != len(self.feature_names) or None not in features:
                return features
            gaps = [self.feature_names[j] for j, v in enumerate(features) if v is None]
        if not gaps:
            return features
        if self.missing == "dead-letter":
            shown = ", ".join(map(repr, gaps[:5])) + (
                f" (+{len(gaps) - 5})" if len(gaps) > 5 else ""
            )
            raise _RejectError(Reason.MISSING, f"missing feature values: {shown}")
        for name in gaps:
            absent[self._feature_index[name]] = True
        nan = float("nan")
        if isinstance(features, dict):
            return {name: features.get(name, nan) for name in self.feature_names}
        return [nan if v is None else v for v in features]

    def _decode_feedback(self, msg: Message, now: float) -> Feedback:
        doc = self._parse(msg.value())
        if not self._is_plain_feedback(doc):
            self._validate(self._validate_feedback, doc)
        return self._feedback(doc, self._event_time(doc, msg, now), msg)

    def _event_time(self, doc: dict[str, Any], msg: Message, now: float) -> float:
        """The payload's ``ts``, else the Kafka timestamp (else ``now``). A ``ts`` that is not
        a finite non-negative number, or too far ahead of the Kafka timestamp, is rejected."""
        kafka_ts = _kafka_time(msg, now)
        if "ts" not in doc:
            return kafka_ts
        ts = _seconds(doc["ts"])
        if ts is None:
            raise _RejectError(
                Reason.TS_OUT_OF_RANGE,
                f"ts {one_line(repr(doc['ts']), 40)} is not a finite non-negative number",
            )
        if ts > kafka_ts + self.max_future_skew_s:
            raise _RejectError(
                Reason.TS_OUT_OF_RANGE,
                f"ts {ts:.3f} is {ts - kafka_ts:.0f} s ahead of the Kafka timestamp "
                f"(max_future_skew_s={self.max_future_skew_s:g})",
            )
        return ts

    def _or_dead_letter(
        self, batch: DecodedBatch, msg: Message, decode: Callable[[], T]
    ) -> T | None:
        """What ``decode`` gives for ``msg``, or None with ``msg`` dead-lettered: its reason,
        or ``decode`` for any other exception (one message must never stop the loop)."""
        try:
            return decode()
        except _RejectError as reject:
            self._reject(batch, msg, reject)
        except Exception as exc:
            self._reject(batch, msg, _RejectError(Reason.DECODE, f"{type(exc).__name__}: {exc}"))
        return None

    @staticmethod
    def _reject(batch: DecodedBatch, msg: Message, reject: _RejectError) -> None:
        source = SourcePosition.of(msg)
        message = one_line(str(reject))  # messages echo input: keep them short and one line
        logger.debug("reject %s[%d]@%d: %s", source.topic, source.partition, source.offset, message)
        batch.dead_letters.append(
            DeadLetter(source, msg.key(), reject.reason, message, msg.value())
        )

    def _is_plain_feature_event(self, doc: Any, features: Any) -> bool:
        """The common shape, checked without the schema validator (whose ``oneOf`` costs
        more than everything else in decoding): a list of exactly the model's number of
        JSON numbers, a valid ``event_id`` and ``ts``. Anything else takes the full check."""
        return (
            type(features) is list
            and len(features) == len(self.feature_names)
            and set(map(type, features)) <= _NUMBER_TYPES
            and _is_event_id(doc.get("event_id"))
            and _is_timestamp(doc.get("ts", 0))
        )

    @staticmethod
    def _is_plain_feedback(doc: Any) -> bool:
        return (
            isinstance(doc, dict)
            and _is_event_id(doc.get("event_id"))
            and type(doc.get("label")) in (str, int)
            and _is_timestamp(doc.get("ts", 0))
        )

    def _parse(self, value: bytes | None) -> Any:
        if value is None:
            raise _RejectError(Reason.DECODE, "empty message (tombstone)")
        if len(value) > self.max_payload_bytes:
            raise _RejectError(
                Reason.OVERSIZED,
                f"{len(value)} bytes exceeds max_payload_bytes={self.max_payload_bytes}",
            )
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):  # the fallback would only recurse deeper
                raise _RejectError(Reason.DECODE, f"invalid JSON: {exc}") from None
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as not_text:
                raise _RejectError(Reason.ENCODING, f"not UTF-8: {not_text}") from None
            try:
                # NaN/Infinity tokens (Python's json, JavaScript) parse here and are then
                # rejected as non_finite, which says more than "invalid JSON"
                doc = json.loads(text)
                # Python's json also keeps a lone surrogate escape ("\ud800"), which orjson
                # refuses: a string holding one could never be written out again
                json.dumps(doc, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a ValueError too: first
                raise _RejectError(
                    Reason.ENCODING, "a string holds a lone surrogate escape (not a character)"
                ) from None
            except (ValueError, RecursionError):
                raise _RejectError(Reason.DECODE, f"invalid JSON: {exc}") from None
            return doc

    @staticmethod
    def _validate(check: Any, doc: Any) -> None:
        try:
            check(doc)
        except fastjsonschema.JsonSchemaException as exc:
            raise _RejectError(Reason.SCHEMA, str(exc)) from None

    def _fill_row(self, row: np.ndarray, features: list[float] | dict[str, float]) -> None:
        n = len(self.feature_names)
        if isinstance(features, dict):
            if features.keys() != self._feature_index.keys():
                missing = sorted(self._feature_index.keys() - features.keys())[:5]
                extra = sorted(features.keys() - self._feature_index.keys())[:5]
                raise _RejectError(Reason.FEATURE_NAMES, f"missing {missing}, unexpected {extra}")
            try:
                row[:] = np.fromiter((features[name] for name in self.feature_names), np.float64, n)
            except OverflowError:  # an integer beyond float range (parsed by the json fallback)
                raise _RejectError(Reason.VALUE_RANGE, "a feature exceeds float range") from None
        elif len(features) != n:
            raise _RejectError(Reason.FEATURE_COUNT, f"expected {n} features, got {len(features)}")
        else:
            try:
                row[:] = features
            except OverflowError:  # an integer beyond float range (parsed by the json fallback)
                raise _RejectError(Reason.VALUE_RANGE, "a feature exceeds float range") from None

    def _feedback(self, doc: dict[str, Any], ts: float, msg: Message) -> Feedback:
        value = doc["label"]
        label = self._label_index.get(str(value))
        if label is None and type(value) is float and value.is_integer():
            # JSON has one number type: 1.0 (what numpy or JavaScript may write) is the integer 1
            label = self._label_index.get(str(int(value)))
        elif label is None and type(value) is str:
            # class names read from data files lose their surrounding blanks; so does a label
            label = self._label_index.get(value.strip())
        if label is None:
            raise _RejectError(
                Reason.UNKNOWN_LABEL,
                f"label {one_line(repr(doc['label']), 80)} is not one of {self.classes}",
            )
        return Feedback(doc["event_id"], label, ts, SourcePosition.of(msg))

    # -- encoding ---------------------------------------------------------------------------

    def encode_dead_letter(self, dead: DeadLetter, now: float | None = None) -> bytes:
        """The dead-letter record, keeping at most ``dead_letter_payload_bytes`` of the payload."""
        return encode_dead_letter(dead, now, payload_bytes=self.dead_letter_payload_bytes)

    def encode_predictions(
        self, block: PredictionBlock, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the predictions topic."""
        classes = self.classes
        probabilities = block.proba.astype(np.float64).tolist()
        head_seqs = block.head_seq.tolist()
        labels = [classes[i] for i in block.labels.tolist()]
        event_ts = block.event_ts.astype(np.float64).tolist()
        # which model served each row (a pipeline with a guard says; None: not remembered)
        states = block.model_states() if block.served_by is not None else [None] * len(block)
        models: dict[tuple[int, object], dict[str, object]] = {}  # rows mostly share one
        scored_ts = block.scored_ts
        docs = []
        for i, event_id in enumerate(block.ids):
            which = (head_seqs[i], states[i])
            model = models.get(which)
            if model is None:
                model = {"name": model_name, "version": model_version, "head_seq": which[0]}
                if which[1] is not None:
                    model["state"] = which[1]
                models[which] = model
            docs.append(
                {
                    "event_id": event_id,
                    "label": labels[i],
                    "probabilities": dict(zip(classes, probabilities[i], strict=True)),
                    "model": model,
                    "event_ts": event_ts[i],
                    "scored_ts": scored_ts,
                }
            )
        return list(zip(block.keys, _encode_records(docs, b'{"event_id":'), strict=True))

    def encode_training_examples(
        self, joined: JoinedExamples, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the training-examples topic: the embedding that was
        served (float64 survives JSON exactly) and the label, keyed by event id."""
        classes = self.classes
        embeddings = np.asarray(joined.embeddings, np.float64).tolist()
        labels, delays = joined.labels.tolist(), np.asarray(joined.delays, np.float64).tolist()
        model = {"name": model_name, "version": model_version}
        docs = [
            {
                "event_id": event_id,
                "label": classes[labels[i]],
                "embedding": embeddings[i],
                "model": model,
                "label_delay_s": delays[i],
            }
            for i, event_id in enumerate(joined.event_ids)
        ]
        keys = [event_id.encode() for event_id in joined.event_ids]
        return list(zip(keys, _encode_records(docs, b'{"event_id":'), strict=True))

    def decode_training_examples(
        self, values: list[bytes | None], dim: int
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ValueError]]]:
        """``(embeddings, class indices, [(position, why)])``: the examples among ``values``
        in arrival order, and why each other value is not one. The common shape is decoded
        for the whole batch at once; anything else goes through
        :meth:`decode_training_example`, which says why it is refused."""
        docs = _parse_all(values, math.inf)
        taken: list[int] = []
        rows: list[list[Any]] = []
        labels: list[int] = []
        for j, doc in enumerate(docs):
            if type(doc) is not dict:
                continue
            embedding, label = doc.get("embedding"), doc.get("label")
            index = self._label_index.get(label) if type(label) is str else None
            if index is not None and type(embedding) is list and len(embedding) == dim:
                taken.append(j)
                rows.append(embedding)
                labels.append(index)
        X = np.empty((0, dim), np.float64)
        if rows and set(map(type, itertools.chain.from_iterable(rows))) <= _NUMBER_TYPES:
            with contextlib.suppress(OverflowError):  # an integer beyond float range: refused
                X = np.array(rows, np.float64)
        finite = np.isfinite(X).all(axis=1).tolist() if len(X) else [False] * len(taken)
        taken = list(itertools.compress(taken, finite))
        X, y = (
            X[np.asarray(finite, bool)] if len(X) else X,
            list(itertools.compress(labels, finite)),
        )
        if len(taken) == len(values):  # the usual
            return X, np.array(y, np.int64), []
        order, refused, done = list(taken), [], set(taken)
        more_rows, more_labels = [], []
        for j, value in enumerate(values):
            if j in done:
                continue
            try:
                embedding, label = self.decode_training_example(value, dim)
            except ValueError as exc:
                refused.append((j, exc))
                continue
            order.append(j)
            more_rows.append(embedding)
            more_labels.append(label)
        X = np.concatenate([X, np.array(more_rows, np.float64).reshape(-1, dim)])
        arrival = np.argsort(order, kind="stable")  # learning depends on the order
        return X[arrival], np.array(y + more_labels, np.int64)[arrival], refused

    def decode_training_example(self, value: bytes | None, dim: int) -> tuple[list[float], int]:
        """``(embedding, class index)``; raises ``ValueError`` with the reason otherwise."""
        try:
            doc = orjson.loads(value or b"")
            embedding, label = doc["embedding"], doc["label"]
            known = label in self._label_index
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a training example: {exc}") from None
        if not known:
            raise UnknownLabelError(f"unknown label {one_line(repr(label), 80)}")
        if not isinstance(embedding, list) or len(embedding) != dim:
            raise ValueError(f"embedding is not {dim} numbers")
        if not all(type(x) in _NUMBER_TYPES and math.isfinite(x) for x in embedding):
            raise ValueError("embedding holds a non-finite or non-numeric value")
        return embedding, self._label_index[label]


_NUMBER_TYPES = {int, float}  # bool is not a JSON number: type(True) is bool


def _is_event_id(value: Any) -> bool:
    """A string of 1-256 characters: integers are refused, since one beyond 2**53 does not
    survive JSON consumers exactly and ``4242`` would silently equal ``"4242"``."""
    return type(value) is str and 0 < len(value) <= 256


def _is_timestamp(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES and value >= 0


def _seconds(value: Any) -> float | None:
    """``value`` as finite non-negative seconds, else ``None`` (NaN, infinity, 1e400, 10**400,
    a negative number or not a number)."""
    if type(value) not in _NUMBER_TYPES:
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _kafka_times(msgs: list[Message], now: float) -> np.ndarray:
    """:func:`_kafka_time` of each of ``msgs``."""
    stamps = np.array([m.timestamp() for m in msgs], np.float64).reshape(-1, 2)
    kind, millis = stamps[:, 0], stamps[:, 1]
    return np.where((kind != 0) & (millis > 0), millis / 1000.0, now)


def _kafka_time(msg: Message, now: float) -> float:
    """The message's Kafka timestamp in seconds, else ``now``."""
    kind, millis = msg.timestamp()
    return millis / 1000.0 if kind != 0 and millis > 0 else now


def _parse_all(values: list[bytes | None], max_bytes: float) -> list[Any]:
    """Each value as orjson parses it; ``None`` where it is absent, larger than
    ``max_bytes`` or not valid JSON (the per-message checks then say which)."""
    try:
        if max(map(len, values)) <= max_bytes:  # type: ignore[arg-type]  # None: TypeError
            return list(map(orjson.loads, values))  # type: ignore[arg-type]
    except (TypeError, orjson.JSONDecodeError):
        pass
    return [_parse_or_none(value, max_bytes) for value in values]


def _parse_or_none(value: bytes | None, max_bytes: float) -> Any:
    if value is None or len(value) > max_bytes:
        return None
    try:
        return orjson.loads(value)
    except orjson.JSONDecodeError:
        return None


def _encode_records(docs: list[dict[str, Any]], start: bytes) -> list[bytes]:
    """Each of ``docs`` as :func:`encode_json` writes it, from one call for all of them
    (each call has a fixed cost of about three times a prediction's own). Every doc's
    first key is the one ``start`` opens: ``},`` + ``start`` then occurs in the array only
    between two docs, since inside a JSON string every ``"`` is escaped."""
    if len(docs) < 2:
        return [encode_json(doc) for doc in docs]
    parts = encode_json(docs)[len(start) + 1 : -2].split(b"}," + start)
    if len(parts) != len(docs):  # a doc not opening with ``start``: one call each
        return [encode_json(doc) for doc in docs]
    return [start + part + b"}" for part in parts]
