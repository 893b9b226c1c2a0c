"""A challenger in shadow: it scores every event the champion scores, learns from the same
labels, publishes to ``shadow-predictions`` (never to ``predictions``), and is compared
with the champion on the same delayed labels in every drift report (the comparison's
statistics: :mod:`streamapp.drift.challenger`); once it wins, it is promoted through the
registry and the control topic."""

from __future__ import annotations

import logging
import time
from typing import Any

from streamapp.assembly import build_pipeline
from streamapp.codec import DecodedBatch
from streamapp.drift.challenger import ChampionChallenger, paired
from streamapp.errors import ConfigError
from streamapp.events import Outputs
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.registry import Registry
from streamapp.serving.hotswap import ControlEvent, publish_control_event
from streamapp.settings import Settings

__all__ = ["Shadow"]

logger = logging.getLogger(__name__)


class Shadow:
    """The challenger's pipeline and its comparison with the champion."""

    def __init__(self, settings: Settings, champion: Bundle) -> None:
        c = settings.challenger
        self.settings = settings
        self.bundle = load_bundle(c.bundle) if c.bundle is not None else champion
        if "regression" in (champion.manifest.task, self.bundle.manifest.task):
            # the comparison is McNemar's on classes; a regression champion serves alone
            raise ConfigError("a challenger compares classifiers; set challenger.enabled=false")
        if (self.bundle.manifest.feature_names, self.bundle.manifest.classes) != (
            champion.manifest.feature_names,
            champion.manifest.classes,
        ):
            raise ConfigError("the challenger must take the same features and classes")
        head_settings = c.head or settings.head
        finetune = c.finetune or settings.finetune
        shadow_settings = settings.with_overrides(
            head=head_settings.model_dump(), finetune=finetune.model_dump(), role="all"
        )
        self.pipeline = build_pipeline(shadow_settings, self.bundle)
        self.comparison = ChampionChallenger(len(self.bundle.manifest.classes), c.alpha)
        self.promoted = False
        learning = head_settings if not finetune.enabled else finetune
        self.description = f"{self.bundle.name} {self.bundle.version} with {learning!r}"
        logger.info("challenger in shadow: %s", self.description)

    @property
    def model(self) -> tuple[str, str]:
        """The challenger's model name and version, as its predictions name it."""
        return self.bundle.name, self.bundle.version

    def process(self, batch: DecodedBatch, champion: Outputs) -> None:
        """Score and learn in shadow (its predictions ride in ``champion.shadow_predictions``
        to ``shadow-predictions``), and compare on the labels both joined."""
        outputs = self.pipeline.process(batch)
        champion.shadow_predictions = outputs.predictions
        ours, theirs = champion.joined, outputs.joined
        if ours is not None and theirs is not None and not self.promoted:
            a, b = paired(ours.event_ids, theirs.event_ids)
            self.comparison.update(ours.labels[a], ours.proba[a], theirs.proba[b])

    def state_dict(self) -> dict[str, Any]:
        """The challenger's learning state and its comparison with the champion, for the
        worker's snapshot beside the champion's (see :meth:`Pipeline.state_dict`)."""
        return {
            "pipeline": self.pipeline.state_dict(),
            "comparison": self.comparison.state_dict(),
            "promoted": self.promoted,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.pipeline.load_state_dict(state["pipeline"])
        self.comparison.load_state_dict(state["comparison"])
        self.promoted = bool(state["promoted"])

    def summary(self) -> dict[str, Any]:
        return {
            "model": {"name": self.bundle.name, "version": self.bundle.version},
            **self.comparison.summary(),
            "promoted": self.promoted,
        }

    def maybe_promote(self) -> None:
        """Promote the challenger in the registry once it wins (between batches)."""
        s, c = self.settings, self.settings.challenger
        if self.promoted or not c.auto_promote:
            return
        if not self.comparison.challenger_wins(c.min_labels, c.margin):
            return
        if s.model.registry is None or s.model.name is None or c.bundle is None:
            logger.warning("the challenger wins but is not a registry version: not promoted")
            self.promoted = True  # say it once
            return
        registry = Registry(s.model.registry)
        ref = registry.promote(s.model.name, self.bundle.version, s.model.alias)
        event = ControlEvent("promote", ref.name, ref.version, s.model.alias, time.time())
        publish_control_event(s, event)
        self.promoted = True
        logger.info("challenger %s won %s: promoted", ref, self.comparison.summary()["challenger"])
