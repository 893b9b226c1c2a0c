"""Batch decode of the input topics: polled messages in, feature columns, labels and dead
letters out.

Decoding never raises on bad input: every message becomes either part of the batch or a
:class:`~streamapp.events.DeadLetter` with its reason. The common shapes are decoded a batch
at a time with msgspec's typed decoders (:mod:`streamapp.codec.plain`) and numpy; any other
message goes through the per-message checks (:mod:`streamapp.codec.checks`), which accept it
or say why not.
"""

from __future__ import annotations

import functools
import itertools
import logging
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from msgspec import UNSET

from streamapp.codec.checks import (
    NUMBER_TYPES,
    Message,
    MessageChecks,
    RejectError,
    kafka_time,
    kafka_times,
)
from streamapp.codec.dead_letters import one_line
from streamapp.codec.plain import (
    FEATURE_EVENTS,
    FEEDBACK,
    REGRESSION_FEEDBACK,
    PlainFeatureEvent,
    decode_plain,
)
from streamapp.codec.registry import WireReader
from streamapp.events import (
    DeadLetter,
    FeatureBlock,
    Feedback,
    Reason,
    SourcePosition,
    position_of,
)

__all__ = ["BatchDecoder", "DecodedBatch"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(slots=True)
class DecodedBatch:
    """One polled batch after decoding: feature columns, feedback, rejects.

    The input's positions and values ride along (named tuples and bytes, references, no
    copy, no Kafka message): a dead letter found later keeps its payload."""

    features: FeatureBlock
    feedback: list[Feedback] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    positions: list[SourcePosition] = field(default_factory=list)
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


class BatchDecoder(MessageChecks):
    """Decodes polled batches for one model's feature layout and classes.

    A part of :class:`~streamapp.codec.Codec`, which sets the attributes below (and those of
    :class:`~streamapp.codec.checks.MessageChecks`) from its parameters."""

    features_topic: str
    feedback_topic: str
    max_abs_value: float
    # a registry format's reader per input (None: streamapp's JSON), set by
    # streamapp.codec.registry_setup.use_registry
    features_wire: WireReader | None = None
    feedback_wire: WireReader | None = None

    def decode_batch(self, messages: Iterable[Message], now: float | None = None) -> DecodedBatch:
        """Split ``messages`` into feature columns, feedback and dead letters.

        The common shapes are decoded a batch at a time (:meth:`_plain_features`,
        :meth:`_decode_feedback_rows`); any message they do not take goes through the per-message
        checks, which accept or reject it with its reason. Feature values are written
        straight into one preallocated matrix; the finite and range checks run on the whole
        matrix at once.
        """
        now = time.time() if now is None else now
        messages = list(messages)
        positions = list(map(SourcePosition._make, map(position_of, messages)))
        batch = DecodedBatch(
            FeatureBlock.empty(len(self.feature_names)),
            positions=positions,
            payloads=[m.value() for m in messages],
        )
        feedback_topic = self.feedback_topic
        is_label = [p.topic == feedback_topic for p in positions]
        label_rows = list(itertools.compress(range(len(positions)), is_label))
        event_rows = [i for i, label in enumerate(is_label) if not label] if label_rows else None
        if label_rows:
            self._decode_feedback_rows(messages, positions, label_rows, now, batch)
        if event_rows is None:  # no labels: every message is a feature event
            event_rows = list(range(len(positions)))
        if event_rows:
            batch.features = self._decode_feature_rows(messages, positions, event_rows, now, batch)
        if batch.dead_letters and event_rows and label_rows:  # keep dead letters in input order
            order = {p: i for i, p in enumerate(positions)}
            batch.dead_letters.sort(key=lambda dead: order[dead.source])
        return batch

    def _decode_feature_rows(
        self,
        messages: list[Message],
        positions: list[SourcePosition],
        rows: list[int],
        now: float,
        batch: DecodedBatch,
    ) -> FeatureBlock:
        """The feature events among ``messages`` (at ``rows``) as a block; the others are
        dead letters in ``batch``."""
        msgs = [messages[i] for i in rows]
        X = np.empty((len(msgs), len(self.feature_names)), np.float64)
        absent = np.zeros(X.shape, np.bool_)  # imputed (missing) values, not bad ones
        if self.features_wire is not None:  # a registry format: its rejects are dead letters
            ids, ts = self._wire_features(self.features_wire, msgs, X, absent, now, batch)
            ok = np.fromiter((i is not None for i in ids), np.bool_, len(ids))
            undecided: list[int] = []
        else:
            try:
                ids, ts = self._plain_features(msgs, X, now)
            except Exception:  # a shortcut only: the per-message checks decide every message
                logger.debug("batch decoding failed; decoding message by message", exc_info=True)
                ids, ts = [None] * len(msgs), np.full(len(msgs), np.nan)
            ok = np.ones(len(msgs), np.bool_)
            undecided = (
                [j for j, event_id in enumerate(ids) if event_id is None] if None in ids else []
            )
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
        sources = [positions[i] for i in rows]
        return self._feature_block(X, absent, msgs, ids, ts, sources, batch)

    def _plain_features(
        self, msgs: list[Message], X: np.ndarray, now: float
    ) -> tuple[list[str | None], np.ndarray]:
        """``(event ids, event times)`` of the feature events in the common shape, decoded
        together: what :data:`~streamapp.codec.plain.FEATURE_EVENTS` types (a valid
        ``event_id`` and ``ts`` or none, a list of JSON numbers) with exactly the model's
        number of features and a ``ts`` not too far ahead; their values go to ``X``. The id
        of any other message is ``None``: the per-message checks decide it. Never accepts
        what the schema and those checks reject (a test holds it to that)."""
        events = decode_plain(FEATURE_EVENTS, [m.value() for m in msgs], self.max_payload_bytes)
        width = len(self.feature_names)
        ids: list[str | None] = [None] * len(msgs)
        ts = np.full(len(msgs), np.nan)
        features = [() if e is None else e.features for e in events]
        index = np.flatnonzero(np.fromiter(map(len, features), np.int64, len(msgs)) == width)
        if len(index) == 0:
            return ids, ts
        everyone = len(index) == len(msgs)  # the usual batch
        plain = cast(list[PlainFeatureEvent], events if everyone else [events[j] for j in index])
        values = np.fromiter(
            itertools.chain.from_iterable(e.features for e in plain), np.float64, len(plain) * width
        ).reshape(len(plain), width)
        event_ts = np.array([-1.0 if e.ts is UNSET else e.ts for e in plain])
        kafka_ts = kafka_times(msgs, now)[index]
        event_ts = np.where(event_ts < 0, kafka_ts, event_ts)  # no ts: the Kafka timestamp
        good = np.isfinite(event_ts) & (event_ts <= kafka_ts + self.max_future_skew_s)
        if not good.all():
            index, values, event_ts = index[good], values[good], event_ts[good]
            plain = list(itertools.compress(plain, good.tolist()))
        X[index] = values
        ts[index] = event_ts
        for j, event in zip(index.tolist(), plain, strict=True):
            ids[j] = event.event_id
        return ids, ts

    def _decode_feedback_rows(
        self,
        messages: list[Message],
        positions: list[SourcePosition],
        rows: list[int],
        now: float,
        batch: DecodedBatch,
    ) -> None:
        """The labels among ``messages`` (at ``rows``) into ``batch.feedback``, or its dead
        letters."""
        if self.feedback_wire is not None:  # a registry format: its rejects are dead letters
            wired_docs = self.feedback_wire.read([messages[i].value() for i in rows])
            plain_label = (
                self._plain_wired_target if self.task == "regression" else self._plain_wired_label
            )
            for i, wired in zip(rows, wired_docs, strict=True):
                try:  # the common shape first, as for JSON
                    label = plain_label(wired, messages[i], now, positions[i])
                except Exception:
                    label = None
                if label is not None:
                    batch.feedback.append(label)
                    continue
                label = self._or_dead_letter(
                    batch, messages[i], functools.partial(self._wire_label, wired, messages[i], now)
                )
                if label is not None:
                    batch.feedback.append(label)
            return
        if self.task == "regression":  # chosen once per batch: not in the loop below
            self._decode_target_rows(messages, positions, rows, now, batch)
            return
        try:
            docs = decode_plain(FEEDBACK, [batch.payloads[i] for i in rows], self.max_payload_bytes)
        except Exception:  # a shortcut only: the per-message checks decide every message
            docs = [None] * len(rows)
        known, skew = self._label_index, self.max_future_skew_s
        for i, doc in zip(rows, docs, strict=True):
            msg = messages[i]
            # the common shape: a known label and a ts not too far ahead (or none: Kafka's)
            index = None if doc is None else known.get(str(doc.label))
            if index is not None and doc is not None:
                kind, millis = msg.timestamp()  # kafka_time, inline: once per label
                sent = millis / 1000.0 if kind != 0 and millis > 0 else now
                if doc.ts is UNSET:
                    batch.feedback.append(Feedback(doc.event_id, index, sent, positions[i]))
                    continue
                if doc.ts <= sent + skew:
                    batch.feedback.append(Feedback(doc.event_id, index, doc.ts, positions[i]))
                    continue
            label = self._or_dead_letter(  # else the per-message checks decide, or say why not
                batch, msg, functools.partial(self._decode_feedback, msg, now)
            )
            if label is not None:
                batch.feedback.append(label)

    def _decode_target_rows(
        self,
        messages: list[Message],
        positions: list[SourcePosition],
        rows: list[int],
        now: float,
        batch: DecodedBatch,
    ) -> None:
        """A regression bundle's labels among ``messages`` (at ``rows``) into
        ``batch.feedback``, or its dead letters: the common shape (a JSON number within
        ``max_abs_target``, a ``ts`` not too far ahead or none) decoded together by
        :data:`~streamapp.codec.plain.REGRESSION_FEEDBACK`, any other through the
        per-message checks, which say why not."""
        try:
            docs = decode_plain(
                REGRESSION_FEEDBACK, [batch.payloads[i] for i in rows], self.max_payload_bytes
            )
        except Exception:  # a shortcut only: the per-message checks decide every message
            docs = [None] * len(rows)
        bound, skew = self.max_abs_target, self.max_future_skew_s
        for i, doc in zip(rows, docs, strict=True):
            msg = messages[i]
            if doc is not None and -bound <= doc.label <= bound:
                kind, millis = msg.timestamp()  # kafka_time, inline: once per label
                sent = millis / 1000.0 if kind != 0 and millis > 0 else now
                if doc.ts is UNSET:
                    batch.feedback.append(Feedback(doc.event_id, doc.label, sent, positions[i]))
                    continue
                if doc.ts <= sent + skew:
                    batch.feedback.append(Feedback(doc.event_id, doc.label, doc.ts, positions[i]))
                    continue
            label = self._or_dead_letter(  # else the per-message checks decide, or say why not
                batch, msg, functools.partial(self._decode_feedback, msg, now)
            )
            if label is not None:
                batch.feedback.append(label)

    def _wire_features(
        self,
        wire: WireReader,
        msgs: list[Message],
        X: np.ndarray,
        absent: np.ndarray,
        now: float,
        batch: DecodedBatch,
    ) -> tuple[list[str | None], np.ndarray]:
        """``(event ids, event times)`` of feature events in a registry format (the id is
        ``None`` where the message went to ``batch``'s dead letters); values go to ``X``.
        Raises :class:`~streamapp.codec.registry.RegistryUnavailableError` untouched."""
        ids: list[str | None] = [None] * len(msgs)
        ts = np.full(len(msgs), np.nan)
        docs = wire.read([m.value() for m in msgs])
        try:
            taken = self._wire_batch(docs, msgs, X, ts, ids, now)
        except Exception:  # a shortcut only: the per-message checks decide every message
            logger.debug("batch decoding failed; decoding message by message", exc_info=True)
            taken = set()
        for j, (msg, wired) in enumerate(zip(msgs, docs, strict=True)):
            if j in taken:
                continue
            decoded = self._or_dead_letter(
                batch,
                msg,
                functools.partial(self._wire_feature, wired, msg, X[j], absent[j], now),
            )
            if decoded is not None:
                ids[j], ts[j] = decoded
        return ids, ts

    def _wire_batch(
        self,
        docs: list[dict[str, Any] | RejectError],
        msgs: list[Message],
        X: np.ndarray,
        ts: np.ndarray,
        ids: list[str | None],
        now: float,
    ) -> set[int]:
        """The documents in the common shape (the model's number of features, none
        missing, a ``ts`` that is a non-negative number or absent and not too far ahead)
        decoded together into ``X``, ``ts`` and ``ids``; returns their positions. The
        others are left to the per-message checks (a test holds both to the same answers)."""
        width = len(self.feature_names)
        index: list[int] = []
        rows: list[Any] = []
        stamps: list[float] = []
        nan = math.nan
        raw = bytes  # features as little-endian float64 bytes (an Avro run of doubles)
        for j, doc in enumerate(docs):
            if type(doc) is not dict:
                continue
            features = doc["features"]
            stamp = doc.get("ts", nan)
            if (type(features) is raw or (len(features) == width and None not in features)) and (
                stamp is nan or (type(stamp) in NUMBER_TYPES and stamp >= 0)
            ):
                index.append(j)
                rows.append(features)
                stamps.append(stamp)
        if not index:
            return set()
        at = np.asarray(index)
        if all(type(row) is raw for row in rows):  # one copy for the whole batch
            values = np.frombuffer(b"".join(rows), "<f8").reshape(len(rows), width)
        else:
            values = np.array([_as_list(row) for row in rows], np.float64).reshape(-1, width)
        event_ts = np.array(stamps, np.float64)
        kafka_ts = kafka_times(msgs, now)[at]
        event_ts = np.where(np.isnan(event_ts), kafka_ts, event_ts)  # no ts: the Kafka one
        good = np.isfinite(event_ts) & (event_ts <= kafka_ts + self.max_future_skew_s)
        if not good.all():
            at, values, event_ts = at[good], values[good], event_ts[good]
        X[at] = values
        ts[at] = event_ts
        taken = at.tolist()
        for j in taken:
            ids[j] = docs[j]["event_id"]
        return set(taken)

    def _wire_feature(
        self,
        wired: dict[str, Any] | RejectError,
        msg: Message,
        row: np.ndarray,
        absent: np.ndarray,
        now: float,
    ) -> tuple[str, float]:
        if isinstance(wired, RejectError):
            raise wired
        event_ts = self._event_time(wired, msg, now)
        self._fill_row(row, self._fill_missing(_as_list(wired["features"]), absent))
        return wired["event_id"], event_ts

    def _plain_wired_label(
        self,
        wired: dict[str, Any] | RejectError,
        msg: Message,
        now: float,
        position: SourcePosition,
    ) -> Feedback | None:
        """A label document in the common shape (a known label, a ``ts`` that is a
        non-negative number not too far ahead, or none), else ``None`` for the checks."""
        if type(wired) is not dict:
            return None
        index = self._label_index.get(str(wired["label"]))
        if index is None:
            return None
        kafka_ts = kafka_time(msg, now)
        stamp = wired.get("ts")
        if stamp is None:
            return Feedback(wired["event_id"], index, kafka_ts, position)
        if type(stamp) not in NUMBER_TYPES or not 0 <= stamp <= kafka_ts + self.max_future_skew_s:
            return None
        return Feedback(wired["event_id"], index, stamp, position)

    def _plain_wired_target(
        self,
        wired: dict[str, Any] | RejectError,
        msg: Message,
        now: float,
        position: SourcePosition,
    ) -> Feedback | None:
        """A regression label document in the common shape (a finite number within
        ``max_abs_target``, a ``ts`` that is a non-negative number not too far ahead, or
        none), else ``None`` for the checks."""
        if type(wired) is not dict:
            return None
        target = wired["label"]
        if (
            type(target) not in NUMBER_TYPES
            or not -self.max_abs_target <= target <= self.max_abs_target
        ):
            return None
        kafka_ts = kafka_time(msg, now)
        stamp = wired.get("ts")
        if stamp is None:
            return Feedback(wired["event_id"], float(target), kafka_ts, position)
        if type(stamp) not in NUMBER_TYPES or not 0 <= stamp <= kafka_ts + self.max_future_skew_s:
            return None
        return Feedback(wired["event_id"], float(target), stamp, position)

    def _wire_label(
        self, wired: dict[str, Any] | RejectError, msg: Message, now: float
    ) -> Feedback:
        if isinstance(wired, RejectError):
            raise wired
        return self._feedback(wired, self._event_time(wired, msg, now), msg)

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
                    RejectError(Reason.NON_FINITE, "features contain NaN or infinity")
                    if not finite[i]
                    else RejectError(
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

    def _or_dead_letter(
        self, batch: DecodedBatch, msg: Message, decode: Callable[[], T]
    ) -> T | None:
        """What ``decode`` gives for ``msg``, or None with ``msg`` dead-lettered: its reason,
        or ``decode`` for any other exception (one message must never stop the loop)."""
        try:
            return decode()
        except RejectError as reject:
            self._reject(batch, msg, reject)
        except Exception as exc:
            self._reject(batch, msg, RejectError(Reason.DECODE, f"{type(exc).__name__}: {exc}"))
        return None

    @staticmethod
    def _reject(batch: DecodedBatch, msg: Message, reject: RejectError) -> None:
        source = SourcePosition.of(msg)
        message = one_line(str(reject))  # messages echo input: keep them short and one line
        logger.debug("reject %s[%d]@%d: %s", source.topic, source.partition, source.offset, message)
        batch.dead_letters.append(
            DeadLetter(source, msg.key(), reject.reason, message, msg.value())
        )


def _as_list(features: Any) -> Any:
    """Features a registry reader handed over as float64 bytes, as a list; others as given."""
    return np.frombuffer(features, "<f8").tolist() if type(features) is bytes else features
