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
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar, cast

import numpy as np
from msgspec import UNSET

from streamapp.codec.checks import (
    Message,
    MessageChecks,
    RejectError,
    kafka_times,
)
from streamapp.codec.dead_letters import one_line
from streamapp.codec.plain import (
    FEATURE_EVENTS,
    FEEDBACK,
    PlainFeatureEvent,
    decode_plain,
)
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
