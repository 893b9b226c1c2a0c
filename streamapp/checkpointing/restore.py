"""Exactly-once's way back: the last committed snapshot loaded into the learning state, and
the replay from its offsets up to the committed ones, whose outputs are suppressed (they
were published before). Apart from the commit path (:mod:`streamapp.checkpointing.delivery`),
which calls it on start, on an assignment and after an aborted transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable
from typing import Protocol

from streamapp.checkpointing.positions import resume_positions
from streamapp.checkpointing.replay import ReplayGate
from streamapp.checkpointing.state_store import Snapshot, StateStore
from streamapp.codec import Message
from streamapp.drift.monitor import DriftCursor
from streamapp.events import SourcePosition

__all__ = ["LearningState", "SnapshotRestore"]

logger = logging.getLogger(__name__)

Partition = tuple[str, int]
IsLive = Callable[[SourcePosition], bool]


class LearningState(Protocol):
    """What exactly-once snapshots and restores: the engine (:mod:`streamapp.engine`), owner
    of the pipeline and the challenger. A transaction that moved the drift cursor writes it;
    a restore hands the last committed one back."""

    def snapshot(self) -> bytes: ...
    def restore(self, snapshot: Snapshot | None) -> None: ...
    def drift_cursor(self) -> DriftCursor: ...
    def resume_drift(self, committed: DriftCursor) -> None: ...
    def replay_finished(self) -> None: ...


class SnapshotRestore:
    """The restored snapshot's input offsets, and the replay that goes from them to the
    committed offsets."""

    def __init__(self, store: StateStore, state: LearningState) -> None:
        self._store = store
        self._state = state
        self._gate = ReplayGate()
        # the input offsets the restored state covers (a revoke's snapshot adds to them)
        self.offsets: dict[Partition, int] = {}

    @property
    def replaying(self) -> bool:
        return self._gate.active

    def restore(self) -> int:
        """Load the latest snapshot into fresh learning state; returns its sequence number.
        A replay under way is void: the next positions start a new one."""
        restored = self._store.read()
        snapshot = restored.snapshot
        self._state.restore(snapshot)
        if restored.cursor is not None:  # written by a later commit than the snapshot's
            try:
                self._state.resume_drift(DriftCursor.from_json(restored.cursor))
            except ValueError as exc:
                logger.warning("ignoring the stored drift cursor: %s", exc)
        self.offsets = dict(snapshot.offsets) if snapshot else {}
        self._gate = ReplayGate()
        return snapshot.seq if snapshot else 0

    def positions(
        self, partitions: list[Partition], committed: dict[Partition, int]
    ) -> dict[Partition, int]:
        """Where each committed partition resumes; a snapshot behind the committed offset
        starts its replay."""
        starts, replays = resume_positions(partitions, committed, self.offsets)
        for tp, until in replays.items():
            self._gate.replay_until(tp, until)
        return starts

    def covered(self, processed: dict[Partition, int], partitions: Iterable[Partition]) -> None:
        """A snapshot committed with ``partitions`` at ``processed``: if they come back,
        nothing before that is replayed."""
        self.offsets.update((tp, processed[tp]) for tp in partitions if tp in processed)

    def live(self, messages: Iterable[Message]) -> IsLive | None:
        """Which of ``messages``' outputs to publish (``None``: all of them)."""
        return self._gate.is_live if self._gate.any_replayed(messages) else None

    def advance(self, processed: dict[Partition, int]) -> None:
        """Processing reached ``processed``: a replay that reached its end is over."""
        if self._gate.active:
            self._gate.advance(processed)
            if not self._gate.active:
                self._state.replay_finished()

    def end_if_none(self, assigned: Collection[object]) -> None:
        """With partitions assigned and none left to replay, the replay is over (with none
        assigned, it has not started)."""
        if assigned and not self._gate.active:
            self._state.replay_finished()

    def forget(self, gone: Iterable[Partition]) -> None:
        """A replay cut short by a revoke goes on if they come back."""
        self._gate.forget(gone)
