"""score, then ledger -> join -> learn -> drift, for one decoded batch. Imports no Kafka.

Prequential, as in river's ``progressive_val_score(delay=...)``: every event is scored
with the head as it is, its served embedding waits in the ledger, and a label that
arrives later is learned on exactly that embedding (predict before learn).

An event read again at the position it was first read from (a rebalance, a broker outage, a
restart of the consumer) is a *redelivery*, not bad input: its prediction is re-emitted as
it was first served (same probabilities, label, event time and ``head_seq``), and it is not
scored, monitored or learned again. The same ``event_id`` at another position is a
``duplicate_event`` dead letter.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from streamapp.codec import DecodedBatch
from streamapp.conformal import ConformalCalibrator, class_scores, set_sizes
from streamapp.drift.monitor import DriftMonitor
from streamapp.drift.report import DriftReport, build_report
from streamapp.events import (
    ADAPTED,
    SOURCE,
    UNKNOWN,
    DeadLetter,
    FeatureBlock,
    Feedback,
    JoinedExamples,
    Outputs,
    PredictionBlock,
    Reason,
    SourcePosition,
)
from streamapp.guard import SafeAdaptationGuard
from streamapp.ledger import PendingLedger, Seen
from streamapp.model.head import OnlineHead, ovr_proba
from streamapp.model.logits import predicted_classes
from streamapp.selection import Candidates

__all__ = ["Companion", "Embed", "Pipeline", "PipelineStats", "Scored"]

logger = logging.getLogger(__name__)

Embed = Callable[[np.ndarray], np.ndarray]


class Companion(Protocol):
    """A challenger that processes every batch after the champion and before its report."""

    def process(self, batch: DecodedBatch, champion: Outputs) -> None: ...
    def summary(self) -> dict[str, Any]: ...


@dataclass(slots=True)
class PipelineStats:
    """Cumulative counters, exported with every drift report."""

    batches: int = 0
    events_scored: int = 0
    feedback_received: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)
    redelivered: int = 0  # events read again at the same position: re-emitted, not rescored

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events_scored": self.events_scored,
            "feedback_received": self.feedback_received,
            "dead_letters": dict(self.dead_letters),
            "redelivered": self.redelivered,
        }

    @classmethod
    def from_dict(cls, stats: dict[str, Any]) -> PipelineStats:
        return cls(
            int(stats["batches"]),
            int(stats["events_scored"]),
            int(stats["feedback_received"]),
            Counter(stats["dead_letters"]),
            int(stats.get("redelivered", 0)),  # absent from older snapshots
        )


@dataclass(slots=True)
class Scored:
    """A batch between :meth:`Pipeline.score` and :meth:`Pipeline.learn`.

    ``outputs`` holds its predictions (input order) and the dead letters so far;
    ``features``, ``served`` and ``embeddings`` are the new events, their predictions and
    embeddings, which learning remembers (``served`` is None when none was new).
    """

    batch: DecodedBatch
    outputs: Outputs
    now: float
    features: FeatureBlock
    served: PredictionBlock | None = None
    embeddings: np.ndarray | None = None

    @property
    def predictions(self) -> PredictionBlock | None:
        """The batch's predictions, to publish before it is learned from."""
        return self.outputs.predictions


class Pipeline:
    """The per-batch processing of one worker.

    Parameters
    ----------
    embed
        The frozen backbone: features ``(n, d)`` to embeddings ``(n, k)``.
    head
        The online head, warm-started from ``source_coef``/``source_intercept``.
    source_coef, source_intercept
        The frozen source head, kept to report how the unadapted model would have done.
    ledger, monitor
        Pending served rows and the drift state.
    learn_locally
        Learn from the joined labels here; a scorer (``role=scorer``) only returns them in
        ``Outputs.joined`` for the learner process.
    guard
        Safe adaptation (:mod:`streamapp.guard`): serve the frozen source model while the
        adapted head is significantly worse on the same labels; roll a diverged head back.
    conformal
        Online conformal prediction sets (:mod:`streamapp.conformal`): every scored row is
        served with the calibrator's threshold, which the joined labels calibrate.
    candidates
        Input adaptation and online model selection (:mod:`streamapp.selection`):
        the head sees re-standardized inputs, the frozen source model (the guard's
        reference) the unadapted ones, and the selector picks which candidate serves. The
        ledger is then ``candidates.extra_width`` columns wider than the embeddings.

    The *source model* scores the rows the ledger keeps: the source head on the embeddings,
    or, for a head that fine-tunes backbone layers (``source_proba_many``), the frozen top
    layers plus the source head on the activations at the cut.
    """

    def __init__(
        self,
        embed: Embed,
        head: OnlineHead,
        source_coef: np.ndarray,
        source_intercept: np.ndarray,
        ledger: PendingLedger,
        monitor: DriftMonitor,
        *,
        model_name: str,
        model_version: str,
        clock: Callable[[], float] = time.time,
        learn_locally: bool = True,
        guard: SafeAdaptationGuard | None = None,
        instance: str | None = None,
        companion: Companion | None = None,
        conformal: ConformalCalibrator | None = None,
        candidates: Candidates | None = None,
    ) -> None:
        self.embed = embed
        self.head = head
        self.source_coef = source_coef
        self.source_intercept = source_intercept
        self.ledger = ledger
        self.monitor = monitor
        self.model_name = model_name
        self.model_version = model_version
        self.clock = clock
        self.stats = PipelineStats()
        self.learn_locally = learn_locally  # False in a scorer: the learner role learns
        self.stream_time = float("-inf")  # largest event time seen: the ledger's clock
        self.guard = guard
        self.instance = instance  # which worker's window a report describes
        self.companion = companion  # a challenger scoring the same batches in shadow
        self.conformal = conformal
        self.candidates = candidates

    def process(self, batch: DecodedBatch) -> Outputs:
        """:meth:`score` then :meth:`learn`, for a caller that publishes a batch's outputs
        all at once (the challenger, the Faust runtime, the benchmarks)."""
        return self.learn(self.score(batch))

    def score(self, batch: DecodedBatch) -> Scored:
        """The batch's predictions: one forward pass for its new events, the first-served
        predictions of its redeliveries, duplicates dead-lettered. Nothing is learned or
        remembered yet, so the predictions can leave before the batch's learning and drift
        work (off their latency)."""
        now = self.clock()
        outputs = Outputs(dead_letters=list(batch.dead_letters))
        block = batch.features
        fresh, again = self._sort_out(block, outputs.dead_letters, batch.payload_at)
        features = block.select(fresh) if not fresh.all() else block
        parts: list[tuple[np.ndarray, PredictionBlock]] = []
        served: PredictionBlock | None = None
        embeddings: np.ndarray | None = None
        if again.any():
            parts.append((np.flatnonzero(again), self._reemit(block.select(again), now)))
        if len(features):
            served, embeddings = self._score(features, now)
            parts.append((np.flatnonzero(fresh), served))
        outputs.predictions = _in_input_order(parts)
        return Scored(batch, outputs, now, features, served, embeddings)

    def learn(self, scored: Scored) -> Outputs:
        """The learning work of a scored batch: its served rows into the ledger and drift
        window, labels joined and learned, the challenger's turn, a drift report when due.
        Returns the batch's outputs (the predictions :meth:`score` made included)."""
        batch, outputs, now, features = scored.batch, scored.outputs, scored.now, scored.features
        waiting: list[Feedback] = []
        # the predictions left before this: the ledger and drift are off their path
        if scored.served is not None and scored.embeddings is not None:
            waiting = self._remember(features, scored.served, scored.embeddings)
        outputs.joined = self._learn([*waiting, *batch.feedback])
        if self.companion is not None:  # before a report, which says how it compares
            self.companion.process(batch, outputs)
        self._advance_clock(features, batch.feedback)
        # count this batch before a report is made, so the report covers the batch it closes
        self.stats.batches += 1
        self.stats.feedback_received += len(batch.feedback)
        self.stats.dead_letters.update(d.reason.value for d in outputs.dead_letters)
        if self.monitor.due(now):
            outputs.drift_reports.append(self.report(now))
        return outputs

    def _sort_out(
        self,
        block: FeatureBlock,
        dead: list[DeadLetter],
        payload_at: Callable[[SourcePosition], bytes | None],
    ) -> tuple[np.ndarray, np.ndarray]:
        """Masks of the rows to score and of the redeliveries to re-emit; dead-letters
        duplicates (an ``event_id`` already served from another position)."""
        if len(set(block.ids)) == len(block) and not self.ledger.knows_any(block.ids):
            return np.ones(len(block), bool), np.zeros(len(block), bool)  # all new: the usual
        fresh = np.zeros(len(block), bool)
        again = np.zeros(len(block), bool)
        in_batch: dict[str, SourcePosition | None] = {}
        for i, event_id in enumerate(block.ids):
            source = block.sources[i] if block.sources else None
            if event_id in in_batch:
                # the first copy is served in this batch: a second copy of the same message adds
                # nothing, a copy from another position is a duplicate
                same = source is not None and in_batch[event_id] == source
                seen = Seen.REDELIVERED if same else Seen.DUPLICATE
            elif source is None:
                seen = Seen.DUPLICATE if event_id in self.ledger else Seen.NEW
            else:
                seen = self.ledger.seen(event_id, source)
                again[i] = seen is Seen.REDELIVERED
            in_batch.setdefault(event_id, source)
            fresh[i] = seen is Seen.NEW
            self.stats.redelivered += seen is Seen.REDELIVERED
            if seen is Seen.DUPLICATE:
                dead.append(self._duplicate(block, i, payload_at))
        return fresh, again

    @staticmethod
    def _duplicate(
        block: FeatureBlock, i: int, payload_at: Callable[[SourcePosition], bytes | None]
    ) -> DeadLetter:
        source = block.sources[i] if block.sources else SourcePosition("", -1, -1)
        return DeadLetter(
            source,
            block.keys[i],
            Reason.DUPLICATE_EVENT,
            f"event_id {block.ids[i]!r} was already scored from another position",
            payload_at(source),  # a dead letter keeps the input, so it can be sent again
        )

    def _reemit(self, block: FeatureBlock, now: float) -> PredictionBlock:
        """The predictions first served for redelivered events, from the ledger's memory.

        Pending or already gone (joined, expired, evicted), the ledger remembers what was
        served for its last ``max_entries`` finished events too, so a redelivery is always
        re-emitted as first served rather than re-scored by a newer head: a consumer that got
        both copies sees the same prediction twice. ``scored_ts`` is this emission's time.
        An event the ledger has forgotten altogether cannot be told from a new one: scored.
        """
        served = self.ledger.served(block.ids)
        # which model served it is not remembered: the re-emitted row says nothing about it
        served_by = None if self.guard is None else np.full(len(block), UNKNOWN, np.int8)
        return PredictionBlock(
            ids=block.ids,
            keys=block.keys,
            proba=served.proba,
            labels=served.proba.argmax(axis=1),
            event_ts=served.event_ts,
            scored_ts=now,
            head_seq=served.head_seq,
            sources=block.sources,
            served_by=served_by,
            threshold=None if self.conformal is None else served.threshold,
            coverage=None if self.conformal is None else self.conformal.coverage_target,
        )

    def _score(self, block: FeatureBlock, now: float) -> tuple[PredictionBlock, np.ndarray]:
        """The block's predictions and embeddings: one forward pass for the whole batch."""
        by_source = self.guard is not None and self.guard.serving_source
        served_by: np.ndarray | None
        if self.candidates is not None:
            proba, served_by, embeddings = self.candidates.score(
                block.X, self.embed, self.head.predict_proba_many, self.source_proba, by_source
            )
        else:
            embeddings = self.embed(block.X)
            proba = (self.source_proba if by_source else self.head.predict_proba_many)(embeddings)
            served_by = (
                None
                if self.guard is None
                else np.full(len(block), SOURCE if by_source else ADAPTED, np.int8)
            )
        prediction = PredictionBlock(
            ids=block.ids,
            keys=block.keys,
            proba=proba,
            labels=proba.argmax(axis=1),
            event_ts=block.ts,
            scored_ts=now,
            head_seq=np.full(len(block), self.head.n_learned, np.int64),
            sources=block.sources,
            served_by=served_by,
            threshold=None
            if self.conformal is None
            else np.full(len(block), self.conformal.threshold()),
            coverage=None if self.conformal is None else self.conformal.coverage_target,
        )
        return prediction, embeddings

    def _remember(
        self, block: FeatureBlock, scored: PredictionBlock, embeddings: np.ndarray
    ) -> list[Feedback]:
        """Served rows into the ledger (to learn on when their labels come) and the drift
        window; returns the parked labels that were waiting for these events."""
        waiting = self.ledger.add(
            block.ids,
            embeddings,
            scored.proba,
            block.ts,
            sources=block.sources or None,
            head_seq=scored.head_seq,
            threshold=scored.threshold,
        )
        self.monitor.update_events(block.X, scored.labels, block.ts)
        self.stats.events_scored += len(block)
        return waiting

    def _learn(self, feedback: Sequence[Feedback]) -> JoinedExamples | None:
        """Join labels to served rows and learn from them (unless a learner process does);
        returns the joined examples."""
        if not feedback:
            return None
        joined = self.ledger.join(feedback)
        if not len(joined):
            return None
        extras = None
        if self.candidates is not None:
            # the frozen source model's classes were taken on the unadapted inputs at scoring
            joined, extras = self.candidates.split(joined)
            source = extras.source
            if (source < 0).any():  # rows served before (an older snapshot): as they were
                source = np.where(source < 0, self.source_predict(joined.embeddings), source)
        else:
            source = self.source_predict(joined.embeddings)
        self.monitor.update_labels(joined.labels, joined.proba, source, joined.delays)
        if self.conformal is not None:  # the sets as served, judged in label order
            self.conformal.update(
                class_scores(joined.proba, joined.labels),
                joined.thresholds,
                set_sizes(joined.proba, joined.thresholds),
            )
        if self.guard is not None or extras is not None:
            # the adapted head as it is now, before it learns these labels (predict first)
            adapted = self.head.predict_proba_many(joined.embeddings).argmax(axis=1)
            if self.guard is not None:
                self.guard.observe(joined.labels, adapted, source)
            if self.candidates is not None and extras is not None:
                self.candidates.observe(joined.labels, adapted, source, extras)
        if self.learn_locally:
            self.head.learn_many(joined.embeddings, joined.labels)
            if self.guard is not None:
                self.guard.after_learn(self.head, len(joined))
        return joined

    def source_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """Probabilities of the frozen source model on served rows (embeddings or, when the
        head fine-tunes backbone layers, activations at the cut)."""
        frozen = getattr(self.head, "source_proba_many", None)
        if frozen is not None:
            return frozen(embeddings)
        return ovr_proba(
            np.asarray(embeddings, np.float64) @ self.source_coef.T + self.source_intercept
        )

    def source_predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Class indices the frozen source model would give."""
        if getattr(self.head, "source_proba_many", None) is not None:
            return self.source_proba(embeddings).argmax(axis=1)
        scores = embeddings @ self.source_coef.T + self.source_intercept
        return predicted_classes(scores)

    def _advance_clock(self, block: FeatureBlock, feedback: Sequence[Feedback]) -> None:
        latest = max(
            float(block.ts.max()) if len(block) else float("-inf"),
            max((fb.ts for fb in feedback), default=float("-inf")),
        )
        if latest > self.stream_time:
            self.stream_time = latest
            self.ledger.expire(latest)

    def state_dict(self) -> dict[str, Any]:
        """The learning state: head, ledger, drift, counters and stream clock (arrays + JSON)."""
        return {
            "head": self.head.state_dict(),
            "ledger": self.ledger.state_dict(),
            "monitor": self.monitor.state_dict(),
            "stats": self.stats.as_dict(),
            "stream_time": self.stream_time,
            **({"guard": self.guard.state_dict()} if self.guard is not None else {}),
            **({"conformal": self.conformal.state_dict()} if self.conformal is not None else {}),
            **({"candidates": self.candidates.state_dict()} if self.candidates is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        # a snapshot taken with adaptation or selection otherwise configured (or from before
        # them) has other extra columns: missing ones are unknown, surplus ones dropped
        self.ledger.load_state_dict(_fitted(state["ledger"], self.ledger.embedding_dim))
        self.monitor.load_state_dict(state["monitor"])
        self.stats = PipelineStats.from_dict(state["stats"])
        stream_time = state["stream_time"]  # null in snapshots of a fresh pipeline, before
        self.stream_time = float("-inf") if stream_time is None else float(stream_time)
        if self.guard is not None and "guard" in state:  # absent from snapshots before a guard
            self.guard.load_state_dict(state["guard"])
        if self.conformal is not None:  # absent from snapshots before conformal sets: fresh
            if "conformal" in state:
                self.conformal.load_state_dict(state["conformal"])
            else:
                self.conformal.reset()
        if self.candidates is not None and "candidates" in state:  # absent before: fresh
            self.candidates.load_state_dict(state["candidates"])

    def report(self, now: float) -> DriftReport:
        """A drift report of the window so far (and the start of the next window)."""
        return build_report(
            self.monitor.report(now),
            model={
                "name": self.model_name,
                "version": self.model_version,
                "head_seq": self.head.n_learned,
                **(
                    {"candidates": self.candidates.summary()} if self.candidates is not None else {}
                ),
            },
            labels={
                **self.ledger.counts.as_dict(),
                "parked": self.ledger.parked,
                "pending_events": len(self.ledger),
            },
            events={**self.ledger.event_counts.as_dict(), "redelivered": self.stats.redelivered},
            counters=self.stats.as_dict(),
            guard=self.guard.summary() if self.guard is not None else None,
            instance=self.instance,
            challenger=self.companion.summary() if self.companion is not None else None,
            conformal=self.conformal.summary() if self.conformal is not None else None,
        )

    def final_report(self, now: float) -> DriftReport | None:
        """The report of the last, partial window (on a graceful shutdown); None when the
        window has no events."""
        if self.monitor.events_in_window == 0:
            return None
        return self.report(now)


def _fitted(ledger: dict[str, Any], width: int) -> dict[str, Any]:
    """A ledger state whose served rows have ``width`` columns: padded with NaN (unknown
    extra columns) or cut (extra columns this pipeline does not keep)."""
    emb = np.asarray(ledger["emb"], np.float32)
    if emb.ndim != 2 or emb.shape[1] == width:
        return ledger
    if emb.shape[1] > width:
        return {**ledger, "emb": np.ascontiguousarray(emb[:, :width])}
    pad = np.full((len(emb), width - emb.shape[1]), np.nan, np.float32)
    return {**ledger, "emb": np.hstack([emb, pad])}


def _in_input_order(parts: list[tuple[np.ndarray, PredictionBlock]]) -> PredictionBlock | None:
    """One block of the ``(input rows, predictions)`` parts, rows in input order."""
    if not parts:
        return None
    if len(parts) == 1:
        return parts[0][1]
    rows = np.concatenate([index for index, _ in parts])
    return PredictionBlock.concat([block for _, block in parts]).take(np.argsort(rows))
