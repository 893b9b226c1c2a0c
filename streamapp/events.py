"""The values that flow through the pipeline.

Per-event objects exist only at the edges (feedback, dead letters); feature events travel as
columns (:class:`FeatureBlock`) because the hot path scores them as one matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import NamedTuple, Protocol

import numpy as np

from streamapp.drift.report import DriftReport

__all__ = [
    "ADAPTED",
    "MODEL_STATES",
    "SCRATCH",
    "SOURCE",
    "UNKNOWN",
    "DeadLetter",
    "FeatureBlock",
    "Feedback",
    "JoinedExamples",
    "Outputs",
    "PredictionBlock",
    "Reason",
    "SourcePosition",
    "position_of",
]


ADAPTED, SOURCE, UNKNOWN = 0, 1, -1
SCRATCH = 2  # the from-scratch candidate of online model selection (issue 33)
MODEL_STATES: dict[int, str] = {ADAPTED: "adapted", SOURCE: "source", SCRATCH: "scratch"}
"""``PredictionBlock.served_by`` codes; UNKNOWN (a re-emitted row) has no name."""


class Reason(StrEnum):
    """Why an input went to the dead-letter topic (the ``error.type`` field)."""

    ENCODING = "encoding"
    DECODE = "decode"
    OVERSIZED = "oversized"
    SCHEMA = "schema"
    FEATURE_COUNT = "feature_count"
    FEATURE_NAMES = "feature_names"
    NON_FINITE = "non_finite"
    VALUE_RANGE = "value_range"
    UNKNOWN_LABEL = "unknown_label"
    DUPLICATE_EVENT = "duplicate_event"
    TS_OUT_OF_RANGE = "ts_out_of_range"
    MISSING = "missing"
    WIRE_FORMAT = "wire_format"  # not magic byte 0 + a 4-byte schema id (registry formats)
    UNKNOWN_SCHEMA = "unknown_schema"  # a schema id the registry does not know
    SCHEMA_MAPPING = "schema_mapping"  # a schema version whose fields do not map


class _Located(Protocol):
    """The part of a ``confluent_kafka.Message`` that says where it was read."""

    def topic(self) -> str | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...


def position_of(msg: _Located) -> tuple[str, int, int]:
    """``(topic, partition, offset)`` of ``msg``, the one place that reads them (librdkafka
    gives ``None`` for a message that has none)."""
    return msg.topic() or "", msg.partition() or 0, msg.offset() or 0


class SourcePosition(NamedTuple):
    """Where an input message came from (a named tuple: one is made per input message)."""

    topic: str
    partition: int
    offset: int

    @classmethod
    def of(cls, msg: _Located) -> SourcePosition:
        """Where ``msg`` was read (a message without one reads as ``("", 0, 0)``)."""
        return cls(*position_of(msg))

    @property
    def tp(self) -> tuple[str, int]:
        """The ``(topic, partition)`` it belongs to."""
        return self.topic, self.partition


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """An input that could not be processed, with its reason."""

    source: SourcePosition
    key: bytes | None
    reason: Reason
    message: str
    payload: bytes | None


class Feedback(NamedTuple):
    """A true label for an earlier event (a named tuple: one is made per label).

    ``label`` is the class index for a classifier, and the target (a finite float) for a
    regression bundle."""

    event_id: str
    label: int | float
    ts: float
    source: SourcePosition | None = None  # where it was read (None once it went through a snapshot)


@dataclass(slots=True)
class FeatureBlock:
    """Valid feature events of one batch as columns; row ``i`` of ``X`` is event ``ids[i]``."""

    ids: list[str]
    keys: list[bytes | None]
    X: np.ndarray  # (n, n_features) float32
    ts: np.ndarray  # (n,) float64 event time, seconds
    sources: list[SourcePosition]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: np.ndarray) -> FeatureBlock:
        """The rows where ``mask`` is true."""
        keep = np.flatnonzero(mask)
        return FeatureBlock(
            ids=[self.ids[i] for i in keep],
            keys=[self.keys[i] for i in keep],
            X=self.X[keep],
            ts=self.ts[keep],
            sources=[self.sources[i] for i in keep],
        )

    @classmethod
    def concat(cls, blocks: Sequence[FeatureBlock]) -> FeatureBlock:
        """The rows of ``blocks``, one after the other."""
        return cls(
            [i for b in blocks for i in b.ids],
            [k for b in blocks for k in b.keys],
            np.concatenate([b.X for b in blocks]),
            np.concatenate([b.ts for b in blocks]),
            [s for b in blocks for s in b.sources],
        )

    @classmethod
    def empty(cls, n_features: int) -> FeatureBlock:
        return cls([], [], np.empty((0, n_features), np.float32), np.empty(0), [])


@dataclass(slots=True)
class PredictionBlock:
    """Predictions of one batch as columns, ready to encode."""

    ids: list[str]
    keys: list[bytes | None]
    proba: np.ndarray  # (n, n_classes)
    labels: np.ndarray  # (n,) class index
    event_ts: np.ndarray
    scored_ts: float
    head_seq: np.ndarray  # (n,) int64: examples the head had learned when it scored each row
    sources: list[SourcePosition] = field(default_factory=list)
    # (n,) int8 per row: which model served it (see MODEL_STATES); None: the adapted head, all
    served_by: np.ndarray | None = None
    # (n,) float64 per row: the conformal score threshold its set was served with (see
    # streamapp.conformal; NaN: none known); None: conformal sets are off
    threshold: np.ndarray | None = None
    coverage: float | None = None  # the target coverage of those sets

    def model_states(self) -> list[str | None]:
        """Per row ``"adapted"``, ``"source"`` or None (a re-emitted row: not remembered)."""
        if self.served_by is None:
            return ["adapted"] * len(self.ids)
        return [MODEL_STATES.get(int(v)) for v in self.served_by]

    def __len__(self) -> int:
        return len(self.ids)

    def select(self, mask: np.ndarray) -> PredictionBlock:
        """The rows where ``mask`` is true."""
        return self.take(np.flatnonzero(mask))

    def take(self, rows: np.ndarray) -> PredictionBlock:
        """The rows at the indices ``rows``, in that order."""
        index = rows.tolist()
        return PredictionBlock(
            ids=[self.ids[i] for i in index],
            keys=[self.keys[i] for i in index],
            proba=self.proba[rows],
            labels=self.labels[rows],
            event_ts=self.event_ts[rows],
            scored_ts=self.scored_ts,
            head_seq=self.head_seq[rows],
            sources=[self.sources[i] for i in index] if self.sources else [],
            served_by=None if self.served_by is None else self.served_by[rows],
            threshold=None if self.threshold is None else self.threshold[rows],
            coverage=self.coverage,
        )

    @classmethod
    def concat(cls, blocks: Sequence[PredictionBlock]) -> PredictionBlock:
        """The rows of ``blocks`` one after the other; ``scored_ts`` is the latest of theirs.

        >>> a = PredictionBlock(["a"], [None], np.eye(2)[:1], np.array([0]), np.zeros(1), 5.0,
        ...                     np.array([3]))
        >>> b = PredictionBlock(["b"], [b"b"], np.eye(2)[1:], np.array([1]), np.ones(1), 7.0,
        ...                     np.array([4]))
        >>> both = PredictionBlock.concat([a, b])
        >>> both.ids, both.head_seq.tolist(), both.scored_ts, both.proba.shape
        (['a', 'b'], [3, 4], 7.0, (2, 2))
        """
        if not blocks:
            raise ValueError("nothing to concatenate")
        sources = [s for b in blocks for s in b.sources]
        return cls(
            ids=[i for b in blocks for i in b.ids],
            keys=[k for b in blocks for k in b.keys],
            proba=np.concatenate([b.proba for b in blocks]),
            labels=np.concatenate([b.labels for b in blocks]),
            event_ts=np.concatenate([b.event_ts for b in blocks]),
            scored_ts=max(b.scored_ts for b in blocks),
            head_seq=np.concatenate([b.head_seq for b in blocks]),
            sources=sources if all(len(b.sources) == len(b) for b in blocks) else [],
            served_by=None
            if all(b.served_by is None for b in blocks)
            else np.concatenate([b.served_by_rows() for b in blocks]),
            threshold=None
            if all(b.threshold is None for b in blocks)
            else np.concatenate([b.threshold_rows() for b in blocks]),
            coverage=next((b.coverage for b in blocks if b.coverage is not None), None),
        )

    def threshold_rows(self) -> np.ndarray:
        """``threshold`` filled in: NaN (no set known) where the block has none."""
        if self.threshold is None:
            return np.full(len(self.ids), np.nan)
        return self.threshold

    def served_by_rows(self) -> np.ndarray:
        """``served_by`` filled in: adapted (0) where the block has none."""
        if self.served_by is None:
            return np.full(len(self.ids), ADAPTED, np.int8)
        return self.served_by


@dataclass(slots=True)
class JoinedExamples:
    """Labels matched to their served rows; row ``i`` of each array is one example."""

    event_ids: list[str] = field(default_factory=list)
    embeddings: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    labels: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))
    proba: np.ndarray = field(default_factory=lambda: np.empty((0, 0), np.float32))
    delays: np.ndarray = field(default_factory=lambda: np.empty(0))
    sources: list[SourcePosition | None] = field(default_factory=list)  # of the labels
    # the conformal threshold each row was served with (NaN: none); empty: not known here
    thresholds: np.ndarray = field(default_factory=lambda: np.empty(0))

    def __len__(self) -> int:
        return len(self.event_ids)

    def select(self, keep: np.ndarray) -> JoinedExamples:
        rows = np.flatnonzero(keep)
        return JoinedExamples(
            event_ids=[self.event_ids[i] for i in rows],
            embeddings=self.embeddings[rows],
            labels=self.labels[rows],
            proba=self.proba[rows],
            delays=self.delays[rows],
            sources=[self.sources[i] for i in rows] if self.sources else [],
            thresholds=self.thresholds[rows] if len(self.thresholds) else self.thresholds,
        )


@dataclass(slots=True)
class Outputs:
    """What one processed batch publishes."""

    predictions: PredictionBlock | None = None
    drift_reports: list[DriftReport] = field(default_factory=list)
    dead_letters: list[DeadLetter] = field(default_factory=list)
    # the batch's labels joined to their served rows (published as training examples by a
    # scorer, compared between champion and challenger)
    joined: JoinedExamples | None = None
    # a challenger's predictions of the same events, for the shadow-predictions topic
    shadow_predictions: PredictionBlock | None = None
