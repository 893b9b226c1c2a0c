"""The pending ledger: served embeddings waiting for their delayed labels.

A label is joined with exactly the embedding and probabilities that were served, so
learning never recomputes (no training/serving skew). Entries live in a ring buffer of
``max_entries`` rows (oldest evicted first) and expire ``ttl_s`` after their event time,
measured on the stream clock (the largest event time seen), so replaying the same input
gives the same result.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from streamapp.events import Feedback, JoinedExamples

__all__ = ["JoinedExamples", "LabelCounts", "PendingLedger"]

logger = logging.getLogger(__name__)


class _Gone(StrEnum):
    JOINED = "joined"
    EXPIRED = "expired"
    EVICTED = "evicted"


@dataclass(slots=True)
class LabelCounts:
    """Cumulative label outcomes."""

    joined: int = 0
    late: int = 0
    orphan: int = 0
    duplicate: int = 0
    parked: int = 0
    expired_events: int = 0
    evicted_events: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


class PendingLedger:
    """Bounded map ``event_id -> (embedding, probabilities, event time)``.

    >>> import numpy as np
    >>> ledger = PendingLedger(max_entries=2, embedding_dim=1, n_classes=2, ttl_s=10)
    >>> ledger.add(["a", "b", "c"], np.ones((3, 1)), np.full((3, 2), 0.5), np.zeros(3))
    []
    >>> joined = ledger.join([Feedback("a", 1, 5.0), Feedback("c", 0, 5.0), Feedback("c", 0, 6.0)])
    >>> joined.event_ids, ledger.counts.late, ledger.counts.duplicate
    (['c'], 1, 1)
    """

    def __init__(
        self,
        max_entries: int,
        embedding_dim: int,
        n_classes: int,
        ttl_s: float,
        early_label_ttl_s: float = 0.0,
    ) -> None:
        self.max_entries = max_entries
        self.embedding_dim = embedding_dim
        self.n_classes = n_classes
        self.ttl_s = ttl_s
        self.early_label_ttl_s = early_label_ttl_s
        self._reset()

    def _reset(self) -> None:
        cap = self.max_entries
        self._emb = np.zeros((cap, self.embedding_dim), np.float32)
        self._proba = np.zeros((cap, self.n_classes), np.float32)
        self._ts = np.zeros(cap, np.float64)
        self._ids: list[str | None] = [None] * cap
        self._seq_of: dict[str, int] = {}
        self._oldest = 0  # sequence number of the oldest slot that may be live
        self._next = 0
        self._gone: OrderedDict[str, _Gone] = OrderedDict()
        self._early: OrderedDict[str, Feedback] = OrderedDict()
        self.counts = LabelCounts()

    def __len__(self) -> int:
        return len(self._seq_of)

    def __contains__(self, event_id: object) -> bool:
        """True if ``event_id`` is pending or was seen recently (joined, expired, evicted)."""
        return event_id in self._seq_of or event_id in self._gone

    @property
    def parked(self) -> int:
        """Labels waiting for an event that has not been scored yet."""
        return len(self._early)

    def add(
        self, ids: Sequence[str], embeddings: np.ndarray, proba: np.ndarray, ts: np.ndarray
    ) -> list[Feedback]:
        """Record served rows; returns parked labels that were waiting for these events."""
        cap = self.max_entries
        for i, event_id in enumerate(ids):
            seq = self._next
            slot = seq % cap
            if seq - self._oldest >= cap:
                self._drop(slot, _Gone.EVICTED)
                self._oldest = seq - cap + 1
            self._emb[slot] = embeddings[i]
            self._proba[slot] = proba[i]
            self._ts[slot] = ts[i]
            self._ids[slot] = event_id
            self._seq_of[event_id] = seq
            self._next = seq + 1
        if not self._early:
            return []
        return [self._early.pop(event_id) for event_id in ids if event_id in self._early]

    def join(self, feedback: Sequence[Feedback]) -> JoinedExamples:
        """Match labels to pending rows; count late, duplicate and orphan labels."""
        slots, matched = [], []
        cap = self.max_entries
        for fb in feedback:
            seq = self._seq_of.pop(fb.event_id, None)
            if seq is not None:
                slot = seq % cap
                self._ids[slot] = None
                self._remember(fb.event_id, _Gone.JOINED)
                slots.append(slot)
                matched.append(fb)
                continue
            gone = self._gone.get(fb.event_id)
            if gone is _Gone.JOINED:
                self.counts.duplicate += 1
            elif gone is not None:
                self.counts.late += 1
            elif self.early_label_ttl_s > 0 and fb.event_id not in self._early:
                self._early[fb.event_id] = fb
                self.counts.parked += 1
            else:
                self.counts.duplicate += fb.event_id in self._early
                self.counts.orphan += fb.event_id not in self._early
        self.counts.joined += len(matched)
        if not matched:
            return JoinedExamples(
                embeddings=np.empty((0, self.embedding_dim), np.float32),
                proba=np.empty((0, self.n_classes), np.float32),
            )
        index = np.asarray(slots)
        labels_ts = np.fromiter((fb.ts for fb in matched), np.float64, len(matched))
        return JoinedExamples(
            event_ids=[fb.event_id for fb in matched],
            embeddings=self._emb[index].copy(),
            labels=np.fromiter((fb.label for fb in matched), np.int64, len(matched)),
            proba=self._proba[index].copy(),
            delays=np.maximum(labels_ts - self._ts[index], 0.0),
            sources=[fb.source for fb in matched],
        )

    def expire(self, clock: float) -> None:
        """Drop rows older than ``ttl_s`` and parked labels older than ``early_label_ttl_s``."""
        cap = self.max_entries
        horizon = clock - self.ttl_s
        while self._oldest < self._next:
            slot = self._oldest % cap
            if self._ids[slot] is not None:
                if self._ts[slot] >= horizon:
                    break
                self._drop(slot, _Gone.EXPIRED)
            self._oldest += 1
        early_horizon = clock - self.early_label_ttl_s
        while self._early:
            event_id, fb = next(iter(self._early.items()))
            if fb.ts >= early_horizon:
                break
            del self._early[event_id]
            self.counts.orphan += 1

    def state_dict(self) -> dict[str, Any]:
        """Pending rows in insertion order, the memory of finished ids, parked labels."""
        cap = self.max_entries
        slots = [s % cap for s in range(self._oldest, self._next) if self._ids[s % cap] is not None]
        index = np.asarray(slots, dtype=np.int64)
        early = list(self._early.values())
        return {
            "ids": [self._ids[s] for s in slots],
            "emb": self._emb[index],
            "proba": self._proba[index],
            "ts": self._ts[index],
            "gone_ids": list(self._gone),
            "gone_why": [why.value for why in self._gone.values()],
            "early_ids": [fb.event_id for fb in early],
            "early_labels": np.array([fb.label for fb in early], np.int64),
            "early_ts": np.array([fb.ts for fb in early], np.float64),
            "counts": self.counts.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._reset()
        self.add(state["ids"], state["emb"], state["proba"], state["ts"])
        self._gone = OrderedDict(
            (event_id, _Gone(why))
            for event_id, why in zip(state["gone_ids"], state["gone_why"], strict=True)
        )
        self._early = OrderedDict(
            (event_id, Feedback(event_id, int(label), float(ts)))
            for event_id, label, ts in zip(
                state["early_ids"], state["early_labels"], state["early_ts"], strict=True
            )
        )
        self.counts = LabelCounts(**state["counts"])

    def _drop(self, slot: int, why: _Gone) -> None:
        event_id = self._ids[slot]
        if event_id is None:
            return
        self._ids[slot] = None
        del self._seq_of[event_id]
        self._remember(event_id, why)
        if why is _Gone.EXPIRED:
            self.counts.expired_events += 1
        else:
            self.counts.evicted_events += 1

    def _remember(self, event_id: str, why: _Gone) -> None:
        # bounded memory of finished ids: enough to tell late and duplicate labels from orphans
        self._gone[event_id] = why
        if len(self._gone) > self.max_entries:
            self._gone.popitem(last=False)
