"""What was served for an event (probabilities, event time, head, position), in columns.

Both rings of the ledger, the pending events and the finished ones, keep one row of these
columns per slot, so a redelivered event can be re-emitted exactly as it was first served.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["ServedColumns", "ServedRows", "unknown_positions"]


@dataclass(frozen=True, slots=True)
class ServedRows:
    """What was served for some events, row by row: enough to re-emit their predictions."""

    proba: np.ndarray  # (n, n_classes) float64
    event_ts: np.ndarray  # (n,) float64
    head_seq: np.ndarray  # (n,) int64
    threshold: np.ndarray  # (n,) float64: the conformal threshold served (NaN: none)


def unknown_positions(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Topic, partition and offset columns of ``n`` rows read at unknown positions.

    >>> [column.tolist() for column in unknown_positions(2)]
    [[-1, -1], [-1, -1], [-1, -1]]
    """
    return np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int64)


class ServedColumns:
    """Columns of what was served, one row per slot of a ring buffer."""

    COLUMNS = ("proba", "ts", "head_seq", "topic", "partition", "offset", "threshold")

    def __init__(self, capacity: int, n_classes: int) -> None:
        # probabilities in float64, as the head served them: a re-emitted prediction is equal
        self.proba = np.zeros((capacity, n_classes), np.float64)
        self.ts = np.zeros(capacity, np.float64)
        self.head_seq = np.zeros(capacity, np.int64)
        # topic: an index into the ledger's topic names
        self.topic, self.partition, self.offset = unknown_positions(capacity)
        # the conformal threshold the row's set was served with (streamapp.conformal): a
        # label is judged against the set as served, a redelivery re-emits the same set
        self.threshold = np.full(capacity, np.nan)

    def copy_row(self, slot: int, other: ServedColumns, other_slot: int) -> None:
        for name in self.COLUMNS:
            getattr(self, name)[slot] = getattr(other, name)[other_slot]

    def copy_rows(self, slots: list[int], other: ServedColumns, other_slots: list[int]) -> None:
        """``copy_row`` for many rows at once (a slot written twice keeps the last row)."""
        to, at = np.asarray(slots, np.intp), np.asarray(other_slots, np.intp)
        for name in self.COLUMNS:
            getattr(self, name)[to] = getattr(other, name)[at]

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[index] for name in self.COLUMNS}

    def put(self, index: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        for name in self.COLUMNS:
            getattr(self, name)[index] = columns[name]
