"""Bytes <-> events with orjson, validated against ``schemas/``.

Decoding never raises on bad input: every message becomes either part of the batch or a
:class:`~streamapp.events.DeadLetter` with its reason.
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
)
from streamapp.schemas import validator

__all__ = ["Codec", "DecodedBatch", "Message", "encode_dead_letter", "encode_json"]

logger = logging.getLogger(__name__)


class Message(Protocol):
    """The part of ``confluent_kafka.Message`` the codec reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class _RejectError(Exception):
    """Internal: carries a dead-letter reason out of the per-message checks."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(slots=True)
class DecodedBatch:
    """One polled batch after decoding: feature columns, feedback, rejects, next offsets."""

    features: FeatureBlock
    feedback: list[Feedback] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.features) + len(self.feedback) + len(self.dead_letters)


def encode_json(value: Any) -> bytes:
    """orjson with numpy support; the one encoder for every output topic."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_dead_letter(dead: DeadLetter, now: float | None = None) -> bytes:
    """The dead-letter record for ``dead`` (payload as text, or base64 when not UTF-8)."""
    if dead.payload is None:
        payload, encoding = None, "none"
    else:
        try:
            payload, encoding = dead.payload.decode("utf-8"), "utf-8"
        except UnicodeDecodeError:
            payload, encoding = base64.b64encode(dead.payload).decode("ascii"), "base64"
    return encode_json(
        {
            "source": {
                "topic": dead.source.topic,
                "partition": dead.source.partition,
                "offset": dead.source.offset,
            },
            "error": {"type": dead.reason.value, "message": dead.message},
            "payload": payload,
            "payload_encoding": encoding,
            "ts": time.time() if now is None else now,
        }
    )


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
    ) -> None:
        self.feature_names = list(feature_names)
        self.classes = [str(c) for c in classes]
        self.features_topic = features_topic
        self.feedback_topic = feedback_topic
        self.max_abs_value = max_abs_value
        self.max_payload_bytes = max_payload_bytes
        self._feature_index = {name: i for i, name in enumerate(self.feature_names)}
        self._label_index = {name: i for i, name in enumerate(self.classes)}
        self._validate_feature = validator("feature-event")
        self._validate_feedback = validator("feedback")

    # -- decoding ---------------------------------------------------------------------------

    def decode_batch(self, messages: Iterable[Message], now: float | None = None) -> DecodedBatch:
        """Split ``messages`` into feature columns, feedback and dead letters.

        Feature values are written straight into one preallocated matrix; the finite and
        range checks then run on the whole matrix at once.
        """
        now = time.time() if now is None else now
        messages = list(messages)
        X = np.empty((len(messages), len(self.feature_names)), np.float64)
        rows: list[Message] = []  # the message behind each filled row of X
        ids: list[str] = []
        ts: list[float] = []
        batch = DecodedBatch(FeatureBlock.empty(len(self.feature_names)))
        offsets = batch.offsets
        for msg in messages:
            topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset() or 0
            if offsets.get((topic, partition), 0) <= offset:
                offsets[(topic, partition)] = offset + 1
            value = msg.value()
            try:
                doc = self._parse(value)
                event_ts = _event_time(doc.get("ts") if isinstance(doc, dict) else None, msg, now)
                if topic == self.feedback_topic:
                    if not self._is_plain_feedback(doc):
                        self._validate(self._validate_feedback, doc)
                    batch.feedback.append(self._feedback(doc, event_ts, msg))
                else:
                    features = doc.get("features") if isinstance(doc, dict) else None
                    if not self._is_plain_feature_event(doc, features):
                        self._validate(self._validate_feature, doc)
                    self._fill_row(X[len(rows)], features)
                    rows.append(msg)
                    ids.append(str(doc["event_id"]))
                    ts.append(event_ts)
            except _RejectError as reject:
                self._reject(batch, msg, reject)
        if rows:
            rejected = len(batch.dead_letters)
            batch.features = self._feature_block(X[: len(rows)], rows, ids, ts, batch)
            if len(batch.dead_letters) > rejected:  # keep dead letters in input order
                order = {_position(m): i for i, m in enumerate(messages)}
                batch.dead_letters.sort(key=lambda dead: order[dead.source])
        return batch

    def _feature_block(
        self,
        X: np.ndarray,
        rows: list[Message],
        ids: list[str],
        ts: list[float],
        batch: DecodedBatch,
    ) -> FeatureBlock:
        """The valid rows as a block; rows with NaN/inf or out-of-range values are rejected."""
        finite = np.isfinite(X).all(axis=1)
        in_range = (np.abs(np.where(np.isfinite(X), X, 0.0)) <= self.max_abs_value).all(axis=1)
        good = finite & in_range
        for i in np.flatnonzero(~good):
            reject = (
                _RejectError(Reason.NON_FINITE, "features contain NaN or infinity")
                if not finite[i]
                else _RejectError(Reason.VALUE_RANGE, f"a feature exceeds |{self.max_abs_value:g}|")
            )
            self._reject(batch, rows[i], reject)
        if not good.all():
            X, keep = X[good], np.flatnonzero(good)
            rows, ids, ts = [rows[i] for i in keep], [ids[i] for i in keep], [ts[i] for i in keep]
        sources = [
            SourcePosition(m.topic() or "", m.partition() or 0, m.offset() or 0) for m in rows
        ]
        return FeatureBlock(
            ids,
            [m.key() for m in rows],
            X.astype(np.float32),
            np.asarray(ts, dtype=np.float64),
            sources,
        )

    @staticmethod
    def _reject(batch: DecodedBatch, msg: Message, reject: _RejectError) -> None:
        source = _position(msg)
        logger.debug("reject %s[%d]@%d: %s", source.topic, source.partition, source.offset, reject)
        batch.dead_letters.append(
            DeadLetter(source, msg.key(), reject.reason, str(reject), msg.value())
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
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as not_text:
                raise _RejectError(Reason.ENCODING, f"not UTF-8: {not_text}") from None
            try:
                # NaN/Infinity tokens (Python's json, JavaScript) parse here and are then
                # rejected as non_finite, which says more than "invalid JSON"
                return json.loads(text)
            except ValueError:
                raise _RejectError(Reason.DECODE, f"invalid JSON: {exc}") from None

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
            row[:] = np.fromiter((features[name] for name in self.feature_names), np.float64, n)
        elif len(features) != n:
            raise _RejectError(Reason.FEATURE_COUNT, f"expected {n} features, got {len(features)}")
        else:
            try:
                row[:] = features
            except OverflowError:  # an integer beyond float range (parsed by the json fallback)
                raise _RejectError(Reason.VALUE_RANGE, "a feature exceeds float range") from None

    def _feedback(self, doc: dict[str, Any], ts: float, msg: Message) -> Feedback:
        label = self._label_index.get(str(doc["label"]))
        if label is None:
            raise _RejectError(
                Reason.UNKNOWN_LABEL, f"label {doc['label']!r} is not one of {self.classes}"
            )
        return Feedback(str(doc["event_id"]), label, ts, _position(msg))

    # -- encoding ---------------------------------------------------------------------------

    def encode_predictions(
        self, block: PredictionBlock, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the predictions topic."""
        classes = self.classes
        probabilities = block.proba.astype(np.float64).tolist()
        head_seqs = block.head_seq.tolist()
        out = []
        for i, event_id in enumerate(block.ids):
            value = encode_json(
                {
                    "event_id": event_id,
                    "label": classes[int(block.labels[i])],
                    "probabilities": dict(zip(classes, probabilities[i], strict=True)),
                    "model": {
                        "name": model_name,
                        "version": model_version,
                        "head_seq": head_seqs[i],
                    },
                    "event_ts": float(block.event_ts[i]),
                    "scored_ts": block.scored_ts,
                }
            )
            out.append((block.keys[i], value))
        return out

    def encode_training_examples(
        self, joined: JoinedExamples, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the training-examples topic: the embedding that was
        served (float64 survives JSON exactly) and the label, keyed by event id."""
        classes = self.classes
        embeddings = np.asarray(joined.embeddings, np.float64).tolist()
        return [
            (
                event_id.encode(),
                encode_json(
                    {
                        "event_id": event_id,
                        "label": classes[int(joined.labels[i])],
                        "embedding": embeddings[i],
                        "model": {"name": model_name, "version": model_version},
                        "label_delay_s": float(joined.delays[i]),
                    }
                ),
            )
            for i, event_id in enumerate(joined.event_ids)
        ]

    def decode_training_example(self, value: bytes | None, dim: int) -> tuple[list[float], int]:
        """``(embedding, class index)``; raises ``ValueError`` with the reason otherwise."""
        try:
            doc = orjson.loads(value or b"")
            embedding, label = doc["embedding"], doc["label"]
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a training example: {exc}") from None
        if label not in self._label_index:
            raise ValueError(f"unknown label {label!r}")
        if not isinstance(embedding, list) or len(embedding) != dim:
            raise ValueError(f"embedding is not {dim} numbers")
        if not all(type(x) in _NUMBER_TYPES and math.isfinite(x) for x in embedding):
            raise ValueError("embedding holds a non-finite or non-numeric value")
        return embedding, self._label_index[label]


_NUMBER_TYPES = {int, float}  # bool is not a JSON number: type(True) is bool


def _position(msg: Message) -> SourcePosition:
    return SourcePosition(msg.topic() or "", msg.partition() or 0, msg.offset() or 0)


def _is_event_id(value: Any) -> bool:
    kind = type(value)
    return (kind is str and 0 < len(value) <= 256) or kind is int


def _is_timestamp(value: Any) -> bool:
    return type(value) in _NUMBER_TYPES and value >= 0


def _event_time(ts: Any, msg: Message, now: float) -> float:
    """The payload's ``ts``, else the Kafka timestamp, else ``now``."""
    if isinstance(ts, int | float) and not isinstance(ts, bool) and math.isfinite(ts):
        return float(ts)
    kind, millis = msg.timestamp()
    return millis / 1000.0 if kind != 0 and millis > 0 else now
