"""score -> ledger -> join -> learn -> drift, for one decoded batch. Imports no Kafka.

Prequential, as in river's ``progressive_val_score(delay=...)``: every event is scored
with the head as it is, its served embedding waits in the ledger, and a label that
arrives later is learned on exactly that embedding (predict before learn).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamapp.codec import DecodedBatch
from streamapp.drift.monitor import DriftMonitor
from streamapp.events import (
    DeadLetter,
    FeatureBlock,
    Feedback,
    JoinedExamples,
    Outputs,
    PredictionBlock,
    Reason,
)
from streamapp.ledger import PendingLedger
from streamapp.model.head import OnlineHead

__all__ = ["Pipeline", "PipelineStats"]

logger = logging.getLogger(__name__)

Embed = Callable[[np.ndarray], np.ndarray]


@dataclass(slots=True)
class PipelineStats:
    """Cumulative counters, exported with every drift report."""

    batches: int = 0
    events_scored: int = 0
    feedback_received: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)

    def as_dict(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "events_scored": self.events_scored,
            "feedback_received": self.feedback_received,
            "dead_letters": dict(self.dead_letters),
        }


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

    def process(self, batch: DecodedBatch) -> Outputs:
        """Score the batch's events, learn from its labels, report drift when due."""
        now = self.clock()
        outputs = Outputs(dead_letters=list(batch.dead_letters))
        features = self._drop_duplicates(batch.features, outputs.dead_letters)
        waiting: list[Feedback] = []
        if len(features):
            outputs.predictions, waiting = self._score(features, now)
        outputs.joined = self._learn([*waiting, *batch.feedback])
        self._advance_clock(features, batch.feedback)
        if self.monitor.due(now):
            outputs.drift_reports.append(self.report(now))
        self.stats.batches += 1
        self.stats.feedback_received += len(batch.feedback)
        self.stats.dead_letters.update(d.reason.value for d in outputs.dead_letters)
        return outputs

    def _drop_duplicates(self, block: FeatureBlock, dead: list[DeadLetter]) -> FeatureBlock:
        seen: set[str] = set()
        keep = np.ones(len(block), bool)
        for i, event_id in enumerate(block.ids):
            if event_id in seen or event_id in self.ledger:
                keep[i] = False
                dead.append(
                    DeadLetter(
                        block.sources[i],
                        block.keys[i],
                        Reason.DUPLICATE_EVENT,
                        f"event_id {event_id!r} was already scored",
                        None,
                    )
                )
            seen.add(event_id)
        return block if keep.all() else block.select(keep)

    def _score(self, block: FeatureBlock, now: float) -> tuple[PredictionBlock, list[Feedback]]:
        embeddings = self.embed(block.X)  # one forward pass for the whole batch
        proba = self.head.predict_proba_many(embeddings)
        labels = proba.argmax(axis=1)
        waiting = self.ledger.add(block.ids, embeddings, proba, block.ts)
        self.monitor.update_events(block.X, labels, block.ts)
        self.stats.events_scored += len(block)
        prediction = PredictionBlock(
            ids=block.ids,
            keys=block.keys,
            proba=proba,
            labels=labels,
            event_ts=block.ts,
            scored_ts=now,
            head_seq=np.full(len(block), self.head.n_learned, np.int64),
            sources=block.sources,
        )
        return prediction, waiting

    def _learn(self, feedback: Sequence[Feedback]) -> JoinedExamples | None:
        """Join labels to served rows and learn from them (unless a learner process does);
        returns the joined examples."""
        if not feedback:
            return None
        joined = self.ledger.join(feedback)
        if not len(joined):
            return None
        self.monitor.update_labels(
            joined.labels, joined.proba, self.source_predict(joined.embeddings), joined.delays
        )
        if self.learn_locally:
            self.head.learn_many(joined.embeddings, joined.labels)
        return joined

    def source_predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Class indices the frozen source head would give."""
        scores = embeddings @ self.source_coef.T + self.source_intercept
        return (
            (scores[:, 0] > 0).astype(np.int64) if scores.shape[1] == 1 else scores.argmax(axis=1)
        )

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
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.ledger.load_state_dict(state["ledger"])
        self.monitor.load_state_dict(state["monitor"])
        stats = state["stats"]
        self.stats = PipelineStats(
            stats["batches"],
            stats["events_scored"],
            stats["feedback_received"],
            Counter(stats["dead_letters"]),
        )
        self.stream_time = float(state["stream_time"])

    def report(self, now: float) -> dict[str, Any]:
        """A drift report of the window so far (and the start of the next window)."""
        report = self.monitor.report(now)
        report["model"] = {
            "name": self.model_name,
            "version": self.model_version,
            "head_seq": self.head.n_learned,
        }
        report["labels"] = {**self.ledger.counts.as_dict(), "pending_events": len(self.ledger)}
        report["counters"] = self.stats.as_dict()
        return report
