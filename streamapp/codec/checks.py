"""The per-message checks: is this one message a valid feature event or label, and if not, why.

Each check accepts a message's part (its bytes, its schema, its ``ts``, its feature values,
its label) or raises :class:`RejectError` with the dead-letter reason. The batch decoder
(:mod:`streamapp.codec.decode`) sends here only the messages its shortcut does not take; the
field predicates and parse helpers below serve both.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable
from typing import Any, Literal, Protocol

import fastjsonschema
import numpy as np
import orjson

from streamapp.codec.dead_letters import one_line
from streamapp.events import Feedback, Reason, SourcePosition

__all__ = [
    "NUMBER_TYPES",
    "Message",
    "MessageChecks",
    "MissingPolicy",
    "RejectError",
    "Task",
    "as_seconds",
    "is_event_id",
    "is_timestamp",
    "kafka_time",
    "kafka_times",
    "parse_all",
]

MissingPolicy = Literal["dead-letter", "impute"]

Task = Literal["classification", "regression"]
"""What a bundle predicts: a class (feedback carries a class name) or a number (feedback
carries the target, predictions a value and an interval)."""


class Message(Protocol):
    """The part of ``confluent_kafka.Message`` the codec reads."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def timestamp(self) -> tuple[int, int]: ...


class RejectError(Exception):
    """Carries a dead-letter reason out of the per-message checks (never out of the codec)."""

    def __init__(self, reason: Reason, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class MessageChecks:
    """The checks of one message against one model's feature layout and classes (or, for
    a regression bundle, its target's range).

    A part of :class:`~streamapp.codec.Codec`, which sets the attributes below from its
    parameters."""

    feature_names: list[str]
    classes: list[str]
    task: Task = "classification"
    max_abs_value: float
    max_abs_target: float
    max_payload_bytes: int
    max_future_skew_s: float
    missing: MissingPolicy
    _feature_index: dict[str, int]
    _label_index: dict[str, int]
    _validate_feature: Callable[[Any], Any]
    _validate_feedback: Callable[[Any], Any]

    def _decode_feature(
        self, msg: Message, row: np.ndarray, absent: np.ndarray, now: float
    ) -> tuple[str, float]:
        """``(event_id, event time)`` of a feature event whose values are written to ``row``
        (``absent`` marks the missing ones under ``missing=impute``)."""
        doc = self._parse(msg.value())
        features = doc.get("features") if isinstance(doc, dict) else None
        if not self.is_plain_feature_event(doc, features):
            self._validate(self._validate_feature, doc)
        event_ts = self._event_time(doc, msg, now)
        assert features is not None  # validated above: a list or an object of numbers
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
            raise RejectError(Reason.MISSING, f"missing feature values: {shown}")
        for name in gaps:
            absent[self._feature_index[name]] = True
        nan = float("nan")
        if isinstance(features, dict):
            return {name: features.get(name, nan) for name in self.feature_names}
        return [nan if v is None else v for v in features]

    def _decode_feedback(self, msg: Message, now: float) -> Feedback:
        doc = self._parse(msg.value())
        plain = self._is_plain_target if self.task == "regression" else self._is_plain_feedback
        if not plain(doc):
            self._validate(self._validate_feedback, doc)  # the task's feedback schema
        return self._feedback(doc, self._event_time(doc, msg, now), msg)

    def _event_time(self, doc: dict[str, Any], msg: Message, now: float) -> float:
        """The payload's ``ts``, else the Kafka timestamp (else ``now``). A ``ts`` that is not
        a finite non-negative number, or too far ahead of the Kafka timestamp, is rejected."""
        kafka_ts = kafka_time(msg, now)
        if "ts" not in doc:
            return kafka_ts
        ts = as_seconds(doc["ts"])
        if ts is None:
            raise RejectError(
                Reason.TS_OUT_OF_RANGE,
                f"ts {one_line(repr(doc['ts']), 40)} is not a finite non-negative number",
            )
        if ts > kafka_ts + self.max_future_skew_s:
            raise RejectError(
                Reason.TS_OUT_OF_RANGE,
                f"ts {ts:.3f} is {ts - kafka_ts:.0f} s ahead of the Kafka timestamp "
                f"(max_future_skew_s={self.max_future_skew_s:g})",
            )
        return ts

    def is_plain_feature_event(self, doc: Any, features: Any) -> bool:
        """The common shape, checked without the schema validator (whose ``oneOf`` costs
        more than everything else in decoding): a list of exactly the model's number of
        JSON numbers, a valid ``event_id`` and ``ts``. Anything else takes the full check."""
        return (
            type(features) is list
            and len(features) == len(self.feature_names)
            and set(map(type, features)) <= NUMBER_TYPES
            and is_event_id(doc.get("event_id"))
            and is_timestamp(doc.get("ts", 0))
        )

    @staticmethod
    def _is_plain_feedback(doc: Any) -> bool:
        return (
            isinstance(doc, dict)
            and is_event_id(doc.get("event_id"))
            and type(doc.get("label")) in (str, int)
            and is_timestamp(doc.get("ts", 0))
        )

    @staticmethod
    def _is_plain_target(doc: Any) -> bool:
        """A regression label in the common shape (a JSON number; its value is checked
        later), checked without the schema validator."""
        return (
            isinstance(doc, dict)
            and is_event_id(doc.get("event_id"))
            and type(doc.get("label")) in NUMBER_TYPES
            and is_timestamp(doc.get("ts", 0))
        )

    def _parse(self, value: bytes | None) -> Any:
        if value is None:
            raise RejectError(Reason.DECODE, "empty message (tombstone)")
        if len(value) > self.max_payload_bytes:
            raise RejectError(
                Reason.OVERSIZED,
                f"{len(value)} bytes exceeds max_payload_bytes={self.max_payload_bytes}",
            )
        try:
            return orjson.loads(value)
        except orjson.JSONDecodeError as exc:
            if "depth limit" in str(exc):  # the fallback would only recurse deeper
                raise RejectError(Reason.DECODE, f"invalid JSON: {exc}") from None
            try:
                text = value.decode("utf-8")
            except UnicodeDecodeError as not_text:
                raise RejectError(Reason.ENCODING, f"not UTF-8: {not_text}") from None
            try:
                # NaN/Infinity tokens (Python's json, JavaScript) parse here and are then
                # rejected as non_finite, which says more than "invalid JSON"
                doc = json.loads(text)
                # Python's json also keeps a lone surrogate escape ("\ud800"), which orjson
                # refuses: a string holding one could never be written out again
                json.dumps(doc, ensure_ascii=False).encode("utf-8")
            except UnicodeEncodeError:  # a ValueError too: first
                raise RejectError(
                    Reason.ENCODING, "a string holds a lone surrogate escape (not a character)"
                ) from None
            except (ValueError, RecursionError):
                raise RejectError(Reason.DECODE, f"invalid JSON: {exc}") from None
            return doc

    @staticmethod
    def _validate(check: Any, doc: Any) -> None:
        try:
            check(doc)
        except fastjsonschema.JsonSchemaException as exc:
            raise RejectError(Reason.SCHEMA, str(exc)) from None

    def _fill_row(self, row: np.ndarray, features: list[float] | dict[str, float]) -> None:
        n = len(self.feature_names)
        if isinstance(features, dict):
            if features.keys() != self._feature_index.keys():
                missing = sorted(self._feature_index.keys() - features.keys())[:5]
                extra = sorted(features.keys() - self._feature_index.keys())[:5]
                raise RejectError(Reason.FEATURE_NAMES, f"missing {missing}, unexpected {extra}")
            try:
                row[:] = np.fromiter((features[name] for name in self.feature_names), np.float64, n)
            except OverflowError:  # an integer beyond float range (parsed by the json fallback)
                raise RejectError(Reason.VALUE_RANGE, "a feature exceeds float range") from None
        elif len(features) != n:
            raise RejectError(Reason.FEATURE_COUNT, f"expected {n} features, got {len(features)}")
        else:
            try:
                row[:] = features
            except OverflowError:  # an integer beyond float range (parsed by the json fallback)
                raise RejectError(Reason.VALUE_RANGE, "a feature exceeds float range") from None

    def _feedback(self, doc: dict[str, Any], ts: float, msg: Message) -> Feedback:
        if self.task == "regression":
            return Feedback(doc["event_id"], self._target(doc["label"]), ts, SourcePosition.of(msg))
        value = doc["label"]
        label = self._label_index.get(str(value))
        if label is None and type(value) is float and value.is_integer():
            # JSON has one number type: 1.0 (what numpy or JavaScript may write) is the integer 1
            label = self._label_index.get(str(int(value)))
        elif label is None and type(value) is str:
            # class names read from data files lose their surrounding blanks; so does a label
            label = self._label_index.get(value.strip())
        if label is None:
            raise RejectError(
                Reason.UNKNOWN_LABEL,
                f"label {one_line(repr(doc['label']), 80)} is not one of {self.classes}",
            )
        return Feedback(doc["event_id"], label, ts, SourcePosition.of(msg))

    def _target(self, value: Any) -> float:
        """A regression label as the float it names: a JSON number (``schema``; a registry
        record may carry null), finite (``non_finite``: ``1e999`` and ``Infinity`` parse to
        infinity, ``NaN`` to NaN) and of magnitude at most ``max_abs_target`` (``value_range``,
        as for an integer beyond float range)."""
        if type(value) not in NUMBER_TYPES:  # bool is not a JSON number
            raise RejectError(Reason.SCHEMA, f"label {one_line(repr(value), 80)} is not a number")
        try:
            target = float(value)
        except OverflowError:  # an integer beyond float range (parsed by the json fallback)
            raise RejectError(Reason.VALUE_RANGE, "the label exceeds float range") from None
        if not math.isfinite(target):
            raise RejectError(Reason.NON_FINITE, f"label {target} is not finite")
        if abs(target) > self.max_abs_target:
            raise RejectError(
                Reason.VALUE_RANGE, f"label {target:g} exceeds |{self.max_abs_target:g}|"
            )
        return target


NUMBER_TYPES = {int, float}  # bool is not a JSON number: type(True) is bool


def is_event_id(value: Any) -> bool:
    """A string of 1-256 characters: integers are refused, since one beyond 2**53 does not
    survive JSON consumers exactly and ``4242`` would silently equal ``"4242"``."""
    return type(value) is str and 0 < len(value) <= 256


def is_timestamp(value: Any) -> bool:
    """A JSON number, zero or more (NaN fails too)."""
    return type(value) in NUMBER_TYPES and value >= 0


def as_seconds(value: Any) -> float | None:
    """``value`` as finite non-negative seconds, else ``None`` (NaN, infinity, 1e400, 10**400,
    a negative number or not a number)."""
    if type(value) not in NUMBER_TYPES:
        return None
    try:
        seconds = float(value)
    except OverflowError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def kafka_times(msgs: list[Message], now: float) -> np.ndarray:
    """:func:`kafka_time` of each of ``msgs``."""
    pairs = itertools.chain.from_iterable(m.timestamp() for m in msgs)
    stamps = np.fromiter(pairs, np.float64, 2 * len(msgs)).reshape(-1, 2)
    kind, millis = stamps[:, 0], stamps[:, 1]
    return np.where((kind != 0) & (millis > 0), millis / 1000.0, now)


def kafka_time(msg: Message, now: float) -> float:
    """The message's Kafka timestamp in seconds, else ``now``."""
    kind, millis = msg.timestamp()
    return millis / 1000.0 if kind != 0 and millis > 0 else now


def parse_all(values: list[bytes | None], max_bytes: float) -> list[Any]:
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
