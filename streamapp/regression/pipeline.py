"""The per-batch processing of a regression model: the classifiers' pipeline, other outputs.

Everything about events is the same (redeliveries, duplicates, the ledger, the clock,
snapshots, reports); what differs is what a served row is and how a target is judged:

- a served row is the value, one column (``PredictionBlock.proba`` is ``(n, 1)``), and its
  ``labels`` column holds the value's bin on the source prediction profile, which the drift
  monitor counts for prediction drift;
- the conformal threshold is an interval's half-width (``value ± q``), calibrated on absolute
  residuals;
- the guard compares absolute errors (:mod:`streamapp.regression.guard`);
- the monitor reports MAE, RMSE, R² and the residual bias (:mod:`streamapp.regression.monitor`).

Input adaptation and online model selection are the classifiers' (issue 33): not here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamapp.conformal import ConformalCalibrator, residual_scores
from streamapp.events import (
    ADAPTED,
    SOURCE,
    FeatureBlock,
    Feedback,
    JoinedExamples,
    PredictionBlock,
)
from streamapp.ledger import PendingLedger
from streamapp.pipeline import Companion, Embed, Pipeline
from streamapp.regression.guard import RegressionGuard
from streamapp.regression.head import RegressionHead
from streamapp.regression.monitor import RegressionMonitor

__all__ = ["RegressionPipeline"]

logger = logging.getLogger(__name__)


class RegressionPipeline(Pipeline):
    """:class:`~streamapp.pipeline.Pipeline` for a regression bundle (same parameters; the
    head is a :class:`~streamapp.regression.head.RegressionHead` warm-started from the source
    head, the monitor a :class:`~streamapp.regression.monitor.RegressionMonitor`)."""

    head: RegressionHead  # type: ignore[assignment]
    monitor: RegressionMonitor
    guard: RegressionGuard | None

    def __init__(
        self,
        embed: Embed,
        head: RegressionHead,
        ledger: PendingLedger,
        monitor: RegressionMonitor,
        *,
        model_name: str,
        model_version: str,
        learn_locally: bool = True,
        guard: RegressionGuard | None = None,
        instance: str | None = None,
        companion: Companion | None = None,
        conformal: ConformalCalibrator | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            embed,
            head,  # type: ignore[arg-type]
            np.empty((1, 0)),  # the source model is the head's own (source_predict_many)
            np.zeros(1),
            ledger,
            monitor,
            model_name=model_name,
            model_version=model_version,
            learn_locally=learn_locally,
            guard=guard,
            instance=instance,
            companion=companion,
            conformal=conformal,
            **kwargs,
        )

    def _score(self, block: FeatureBlock, now: float) -> tuple[PredictionBlock, np.ndarray]:
        """The block's values and embeddings: one forward pass for the whole batch."""
        by_source = self.guard is not None and self.guard.serving_source
        embeddings = self.embed(block.X)
        model = self.head.source_predict_many if by_source else self.head.predict_many
        with np.errstate(over="ignore", invalid="ignore"):  # a non-finite value is handled
            values = model(embeddings)
        broken = ~np.isfinite(values)
        if broken.any():  # an input at the edge of float range: JSON and Avro have no NaN
            values[broken] = self.monitor.typical_value
            logger.warning(
                "%d of %d values were not finite (inputs beyond the model's range?): served "
                "the source model's median prediction",
                int(broken.sum()),
                len(values),
            )
        prediction = PredictionBlock(
            ids=block.ids,
            keys=block.keys,
            proba=values[:, None],
            labels=self.monitor.bins(values),
            event_ts=block.ts,
            scored_ts=now,
            head_seq=np.full(len(block), self.head.n_learned, np.int64),
            sources=block.sources,
            served_by=None
            if self.guard is None
            else np.full(len(block), SOURCE if by_source else ADAPTED, np.int8),
            threshold=None
            if self.conformal is None
            else np.full(len(block), self.conformal.threshold()),
            coverage=None if self.conformal is None else self.conformal.coverage_target,
        )
        return prediction, embeddings

    def _learn(self, feedback: Sequence[Feedback]) -> JoinedExamples | None:
        """Join targets to served rows and learn from them (unless a learner process does)."""
        if not feedback:
            return None
        joined = _learnable(self.ledger.join(feedback))
        if not len(joined):
            return None
        served = joined.proba[:, 0]
        source = self.head.source_predict_many(joined.embeddings)
        self.monitor.update_labels(joined.labels, served, source, joined.delays)
        if self.conformal is not None:  # the intervals as served, judged in label order
            self.conformal.update(
                residual_scores(served, joined.labels), joined.thresholds, 2 * joined.thresholds
            )
        if self.guard is not None:  # the adapted head before it learns these targets
            self.guard.observe(joined.labels, self.head.predict_many(joined.embeddings), source)
        if self.learn_locally:
            self.head.learn_many(joined.embeddings, joined.labels)
            if self.guard is not None:
                self.guard.after_learn(self.head, len(joined))  # type: ignore[arg-type]
        return joined

    def source_proba(self, embeddings: np.ndarray) -> np.ndarray:
        """The frozen source model's ``(n, 1)`` values on served rows."""
        return self.head.source_predict_many(embeddings)[:, None]

    def source_predict(self, embeddings: np.ndarray) -> np.ndarray:
        """The frozen source model's values on served rows."""
        return self.head.source_predict_many(embeddings)


def _learnable(joined: JoinedExamples) -> JoinedExamples:
    """The joined rows a head can learn from: a NaN column (unknown: a row kept by a snapshot
    taken with fewer columns) is 0, the standardized mean; a row with an infinite column is
    left out, with a log line (one such row would poison the ridge sums for good)."""
    if not len(joined):
        return joined
    rows = joined.embeddings
    if np.isnan(rows).any():
        joined.embeddings = rows = np.nan_to_num(rows, nan=0.0, posinf=np.inf, neginf=-np.inf)
    usable = np.isfinite(rows).all(axis=1) & np.isfinite(joined.proba[:, 0])
    if usable.all():
        return joined
    logger.warning("%d joined rows are not finite: not learned", int((~usable).sum()))
    return joined.select(usable)
