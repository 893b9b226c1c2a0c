"""Replay after a restore: inputs between a snapshot and the committed offsets are processed
again to rebuild the learning state, but their outputs were already published, so they are
suppressed. Pure: no Kafka here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from streamapp.codec import Message
from streamapp.events import SourcePosition

__all__ = ["ReplayGate"]

logger = logging.getLogger(__name__)

Partition = tuple[str, int]


class ReplayGate:
    """Per partition, the offset below which outputs are suppressed.

    >>> gate = ReplayGate()
    >>> gate.replay_until(("features", 0), 10)
    >>> [gate.is_live(SourcePosition("features", 0, offset)) for offset in (9, 10)]
    [False, True]
    >>> gate.advance({("features", 0): 10}); gate.active
    False
    """

    def __init__(self) -> None:
        self._until: dict[Partition, int] = {}

    @property
    def active(self) -> bool:
        return bool(self._until)

    def replay_until(self, tp: Partition, offset: int) -> None:
        self._until[tp] = offset
        logger.info("replaying %s[%d] up to offset %d without publishing", tp[0], tp[1], offset)

    def is_live(self, source: SourcePosition) -> bool:
        until = self._until.get((source.topic, source.partition))
        return until is None or source.offset >= until

    def any_replayed(self, messages: Iterable[Message]) -> bool:
        if not self._until:
            return False
        return any(
            (source := SourcePosition.of(m)).offset < self._until.get(source.tp, -1)
            for m in messages
        )

    def advance(self, processed: dict[Partition, int]) -> None:
        """Forget partitions whose replay is complete."""
        for tp, until in list(self._until.items()):
            if processed.get(tp, -1) >= until:
                del self._until[tp]
                logger.info("replay of %s[%d] complete", tp[0], tp[1])

    def forget(self, partitions: Iterable[Partition]) -> None:
        for tp in partitions:
            self._until.pop(tp, None)
