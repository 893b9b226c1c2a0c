"""The engine: the learning state of one worker and the two steps the loop runs on it.

It owns the pipeline of the served bundle, the challenger in shadow (when one is
configured), the swap to a newly promoted bundle, and what exactly-once snapshots and
restores (:class:`~streamapp.checkpointing.restore.LearningState`). The worker's loop
calls :meth:`Engine.score` and :meth:`Engine.learn` with the predictions published in
between; delivery calls :meth:`Engine.snapshot` and :meth:`Engine.restore`. The Kafka
it reaches is the challenger's (a promotion is a control event); the scoring and learning
are the pipeline's, which imports no Kafka.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp.assembly import build_pipeline
from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.checkpointing.state_store import Snapshot
from streamapp.codec import DecodedBatch
from streamapp.drift.monitor import DriftCursor
from streamapp.drift.report import DriftReport
from streamapp.events import Outputs
from streamapp.model.bundle import Bundle
from streamapp.pipeline import PipelineStats, Scored
from streamapp.serving.challenger import Shadow
from streamapp.settings import Settings

__all__ = ["Engine"]

logger = logging.getLogger(__name__)


class Engine:
    """The served bundle's pipeline and its challenger, swapped and restored as one.

    Parameters
    ----------
    settings
        The worker's settings (the pipeline's and the challenger's configuration).
    bundle
        The bundle to serve.
    """

    def __init__(self, settings: Settings, bundle: Bundle) -> None:
        self.settings = settings
        self.bundle = bundle
        self.shadow = self._make_shadow()  # a challenger, when one is configured
        self.pipeline = build_pipeline(settings, bundle, self.shadow)

    @property
    def stats(self) -> PipelineStats:
        return self.pipeline.stats

    # -- the loop's two steps ----------------------------------------------------------------

    def score(self, batch: DecodedBatch) -> Scored:
        """The batch's predictions (one forward pass), before any of its learning work."""
        return self.pipeline.score(batch)

    def learn(self, scored: Scored) -> Outputs:
        """Ledger, join, learn, drift (the challenger's turn included) for a scored batch;
        the batch's outputs."""
        return self.pipeline.learn(scored)

    def between_batches(self) -> None:
        """What waits for a batch to be done: promoting a challenger that won."""
        if self.shadow is not None:
            self.shadow.maybe_promote()

    def load_head(self, head: dict[str, Any]) -> None:
        """Serve the learner's newest head (a scorer follows it)."""
        self.pipeline.head.load_state_dict(head)

    def final_report(self, now: float) -> DriftReport | None:
        """The last partial window's drift report; None when the window has no events."""
        return self.pipeline.final_report(now)

    def swap(self, bundle: Bundle) -> int:
        """Serve ``bundle`` from the next batch on (between batches); the counters and the
        report numbers go on, the events pending a label are dropped: returns how many."""
        previous = self.pipeline
        pending = len(previous.ledger)
        self.bundle = bundle
        self.pipeline = build_pipeline(self.settings, bundle, self.shadow)
        self.pipeline.stats = previous.stats
        self.pipeline.monitor.continue_from(previous.monitor)
        return pending

    # -- the learning state, as exactly-once snapshots and restores it ----------------------

    def snapshot(self) -> bytes:
        """The pipeline's state, and the challenger's when there is one."""
        state = self.pipeline.state_dict()
        if self.shadow is not None:
            state["shadow"] = self.shadow.state_dict()
        return encode_state(state)

    def restore(self, snapshot: Snapshot | None) -> None:
        """Fresh learning state, then ``snapshot``'s when there is one."""
        self.shadow = self._make_shadow()
        self.pipeline = build_pipeline(self.settings, self.bundle, self.shadow)
        if snapshot is None:
            logger.info(
                "no learning-state snapshot for %s: starting from the source head",
                self.settings.transactional_id,
            )
            return
        state = decode_state(snapshot.blob)
        self.pipeline.load_state_dict(state)
        if self.shadow is not None and "shadow" in state:
            self.shadow.load_state_dict(state["shadow"])
        logger.info(
            "restored snapshot %d (head_seq %d, %d pending labels)",
            snapshot.seq,
            self.pipeline.head.n_learned,
            len(self.pipeline.ledger),
        )

    def drift_cursor(self) -> DriftCursor:
        return self.pipeline.monitor.cursor()

    def resume_drift(self, committed: DriftCursor) -> None:
        self.pipeline.monitor.resume(committed)

    def replay_finished(self) -> None:
        self.pipeline.monitor.replay_finished()

    def _make_shadow(self) -> Shadow | None:
        """A fresh challenger, when one is configured."""
        if not self.settings.challenger.enabled:
            return None
        return Shadow(self.settings, self.bundle)
