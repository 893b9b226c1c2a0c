"""The pending ledger: served embeddings waiting for their delayed labels.

A label is joined with exactly the embedding and probabilities that were served, so
learning never recomputes (no training/serving skew). Entries live in a ring buffer of
``max_entries`` rows (oldest evicted first) and expire ``ttl_s`` after their event time,
measured on the stream clock (the largest event time seen), so replaying the same input
gives the same result.

:class:`PendingLedger` is the façade: it owns the pending ring and composes the memory of
finished events (:mod:`~streamapp.ledger.finished`), the early labels
(:mod:`~streamapp.ledger.parking`), the counters (:mod:`~streamapp.ledger.counts`) and the
snapshots (:mod:`~streamapp.ledger.snapshot`).
"""

from __future__ import annotations

import operator
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamapp.events import Feedback, JoinedExamples, SourcePosition
from streamapp.ledger import snapshot
from streamapp.ledger.counts import EventCounts, LabelCounts
from streamapp.ledger.finished import GONE_CODES, FinishedEvents, Gone, Seen
from streamapp.ledger.parking import EarlyLabels
from streamapp.ledger.served import ServedColumns, ServedRows, unknown_positions

__all__ = ["PendingLedger"]

_PARTITION, _OFFSET = operator.attrgetter("partition"), operator.attrgetter("offset")


class PendingLedger:
    """Bounded map ``event_id -> (embedding, probabilities, event time)``.

    >>> import numpy as np
    >>> ledger = PendingLedger(max_entries=2, embedding_dim=1, n_classes=2, ttl_s=10)
    >>> ledger.add(["a", "b", "c"], np.ones((3, 1)), np.full((3, 2), 0.5), np.zeros(3))
    []
    >>> joined = ledger.join([Feedback("a", 1, 5.0), Feedback("c", 0, 5.0), Feedback("c", 0, 6.0)])
    >>> joined.event_ids, ledger.counts.late, ledger.counts.duplicate
    (['c'], 1, 1)
    >>> ledger.event_counts.evicted
    1
    """

    def __init__(
        self,
        max_entries: int,
        embedding_dim: int,
        n_classes: int,
        ttl_s: float,
        early_label_ttl_s: float = 0.0,
        max_parked: int = 10_000,
        label_dtype: type[np.generic] = np.int64,
    ) -> None:
        self.max_entries = max_entries
        # class indices for a classifier, float64 targets for a regression model
        self.label_dtype = label_dtype
        self.embedding_dim = embedding_dim
        self.n_classes = n_classes
        self.ttl_s = ttl_s
        self._early = EarlyLabels(early_label_ttl_s, max_parked)
        self._reset()

    def _reset(self) -> None:
        cap = self.max_entries
        self._emb = np.zeros((cap, self.embedding_dim), np.float32)
        self._served = ServedColumns(cap, self.n_classes)
        self._ids: list[str | None] = [None] * cap
        self._seq_of: dict[str, int] = {}
        self._oldest = 0  # sequence number of the oldest slot that may be live
        self._next = 0
        self._gone = FinishedEvents(cap, self.n_classes)  # a ring of the last max_entries
        self._topics: list[str] = []
        self._topic_index: dict[str, int] = {}
        self._early.labels.clear()
        self.counts = LabelCounts()
        self.event_counts = EventCounts()

    @property
    def early_label_ttl_s(self) -> float:
        """How long a label that beat its event waits for it (0: it is an orphan at once)."""
        return self._early.ttl_s

    def __len__(self) -> int:
        return len(self._seq_of)

    def __contains__(self, event_id: object) -> bool:
        """True if ``event_id`` is pending or was seen recently (joined, expired, evicted)."""
        return event_id in self._seq_of or event_id in self._gone.index

    @property
    def parked(self) -> int:
        """Labels waiting for an event that has not been scored yet."""
        return len(self._early.labels)

    @property
    def finished(self) -> int:
        """Events remembered after they left (joined, expired, evicted): at most
        ``max_entries``, to tell a redelivery from a duplicate."""
        return len(self._gone)

    @property
    def max_parked(self) -> int:
        """How many labels may wait for their events at most (beyond, the oldest is an orphan)."""
        return self._early.max_parked

    def add(
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        proba: np.ndarray,
        ts: np.ndarray,
        *,
        sources: Sequence[SourcePosition] | None = None,
        head_seq: np.ndarray | None = None,
        threshold: np.ndarray | None = None,
    ) -> list[Feedback]:
        """Record served rows (where they were read, which head scored them, the conformal
        threshold of their sets); returns parked labels that were waiting for these events."""
        n = len(ids)
        topic, partition, offset = self._positions(sources, n)
        columns = {
            "proba": proba,
            "ts": ts,
            "head_seq": np.zeros(n, np.int64) if head_seq is None else head_seq,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "threshold": np.full(n, np.nan) if threshold is None else threshold,
        }
        # in chunks of at most max_entries: a chunk never evicts its own rows, so a row is
        # evicted (and remembered) before its slot is written over
        for start in range(0, n, self.max_entries):
            rows = slice(start, min(start + self.max_entries, n))
            slots = self._claim_slots(ids[rows])
            self._emb[slots] = embeddings[rows]
            self._served.put(slots, {name: column[rows] for name, column in columns.items()})
        return self._early.claim(ids)

    def _claim_slots(self, ids: Sequence[str]) -> np.ndarray:
        cap = self.max_entries
        start, n = self._next, len(ids)
        if start + n - self._oldest <= cap:  # nothing to evict: claim them all at once
            self._seq_of.update(zip(ids, range(start, start + n), strict=True))
            first = start % cap
            head = min(n, cap - first)  # the rest wraps around to slot 0
            self._ids[first : first + head] = ids[:head]
            self._ids[: n - head] = ids[head:]
            self._next = start + n
            return np.arange(start, start + n) % cap
        slots = np.empty(len(ids), np.int64)
        for i, event_id in enumerate(ids):
            seq = self._next
            slot = seq % cap
            if seq - self._oldest >= cap:
                self._drop(slot, Gone.EVICTED)
                self._oldest = seq - cap + 1
            self._ids[slot] = event_id
            self._seq_of[event_id] = seq
            self._next = seq + 1
            slots[i] = slot
        return slots

    def _positions(
        self, sources: Sequence[SourcePosition] | None, n: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if sources is None:  # unknown positions never match: a repeat is a duplicate
            return unknown_positions(n)
        topics = {s.topic for s in sources}
        if len(topics) == 1:  # one input topic: the usual
            topic = np.full(n, self._topic_id(topics.pop()), np.int32)
        else:
            topic = np.fromiter((self._topic_id(s.topic) for s in sources), np.int32, n)
        partition = np.fromiter(map(_PARTITION, sources), np.int32, n)
        offset = np.fromiter(map(_OFFSET, sources), np.int64, n)
        return topic, partition, offset

    def _topic_id(self, topic: str) -> int:
        index = self._topic_index.get(topic)
        if index is None:
            index = self._topic_index[topic] = len(self._topics)
            self._topics.append(topic)
        return index

    def _locate(self, event_id: str) -> tuple[ServedColumns, int] | None:
        seq = self._seq_of.get(event_id)
        if seq is not None:
            return self._served, seq % self.max_entries
        seq = self._gone.index.get(event_id)
        if seq is not None:
            return self._gone.served, seq % self.max_entries
        return None

    def knows_any(self, ids: Sequence[str]) -> bool:
        """Whether any of ``ids`` is pending or remembered (else all are new)."""
        return any(map(self._seq_of.__contains__, ids)) or any(
            map(self._gone.index.__contains__, ids)
        )

    def seen(self, event_id: str, source: SourcePosition) -> Seen:
        """Whether ``event_id`` read at ``source`` is new, a redelivery or a duplicate."""
        found = self._locate(event_id)
        if found is None:
            return Seen.NEW
        served, slot = found
        topic = self._topic_index.get(source.topic, -2)  # -2: never the -1 of "unknown"
        same = (
            int(served.topic[slot]) == topic
            and int(served.partition[slot]) == source.partition
            and int(served.offset[slot]) == source.offset
        )
        return Seen.REDELIVERED if same else Seen.DUPLICATE

    def served(self, ids: Sequence[str]) -> ServedRows:
        """What was served for ``ids`` (each pending or remembered: see :meth:`seen`)."""
        n = len(ids)
        out = ServedRows(
            np.zeros((n, self.n_classes)), np.zeros(n), np.zeros(n, np.int64), np.zeros(n)
        )
        for i, event_id in enumerate(ids):
            found = self._locate(event_id)
            if found is None:
                raise KeyError(event_id)
            served, slot = found
            out.proba[i] = served.proba[slot]
            out.event_ts[i] = served.ts[slot]
            out.head_seq[i] = served.head_seq[slot]
            out.threshold[i] = served.threshold[slot]
        return out

    def join(self, feedback: Sequence[Feedback]) -> JoinedExamples:
        """Match labels to pending rows; count late, duplicate and orphan labels, park early
        ones (at most ``max_parked``: beyond, the oldest parked label becomes an orphan)."""
        slots: list[int] = []
        matched: list[Feedback] = []
        joined_at: dict[str, int] = {}  # this batch's joined events: their gone sequence
        cap, pending, ids = self.max_entries, self._seq_of, self._ids
        finished, early = self._gone, self._early
        remembered, gone_why, first = finished.index, finished.why, finished.next
        parked, parking = early.labels, early.enabled
        for fb in feedback:
            seq = pending.pop(fb.event_id, None)
            if seq is not None:
                slot = seq % cap
                ids[slot] = None
                slots.append(slot)
                joined_at[fb.event_id] = first + len(matched)
                matched.append(fb)
                continue
            # the joined events are remembered after the loop; what they will have evicted
            # from the memory of finished events by now is forgotten, as one by one
            gone = joined_at.get(fb.event_id, remembered.get(fb.event_id))
            if gone is not None and gone < first + len(matched) - cap:
                gone = None
            if gone is not None:
                joined = gone >= first or GONE_CODES[gone_why[gone % cap]] is Gone.JOINED
                if joined:
                    self.counts.duplicate += 1
                else:
                    self.counts.late += 1
            elif fb.event_id in parked:
                self.counts.duplicate += 1
            elif parking:
                self.counts.orphan += early.park(fb)
            else:
                self.counts.orphan += 1
        if matched:  # remembered as joined, what was served copied for all of them at once
            finished.remember_joined([fb.event_id for fb in matched], self._served, slots)
        self.counts.joined += len(matched)
        if not matched:
            return JoinedExamples(
                embeddings=np.empty((0, self.embedding_dim), np.float32),
                proba=np.empty((0, self.n_classes), np.float64),
            )
        index = np.asarray(slots)
        labels_ts = np.fromiter((fb.ts for fb in matched), np.float64, len(matched))
        return JoinedExamples(
            event_ids=[fb.event_id for fb in matched],
            embeddings=self._emb[index].copy(),
            labels=np.fromiter((fb.label for fb in matched), self.label_dtype, len(matched)),
            proba=self._served.proba[index].copy(),
            delays=np.maximum(labels_ts - self._served.ts[index], 0.0),
            sources=[fb.source for fb in matched],
            thresholds=self._served.threshold[index].copy(),
        )

    def expire(self, clock: float) -> None:
        """Drop rows older than ``ttl_s`` and parked labels older than ``early_label_ttl_s``."""
        cap = self.max_entries
        horizon = clock - self.ttl_s
        while self._oldest < self._next:
            slot = self._oldest % cap
            if self._ids[slot] is not None:
                if self._served.ts[slot] >= horizon:
                    break
                self._drop(slot, Gone.EXPIRED)
            self._oldest += 1
        self.counts.orphan += self._early.expire(clock)

    def state_dict(self) -> dict[str, Any]:
        """Pending rows in insertion order, the memory of finished events, parked labels
        (see :mod:`~streamapp.ledger.snapshot`)."""
        return snapshot.state_dict(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`, of this version or an older one (see
        :func:`~streamapp.ledger.snapshot.load_state_dict`)."""
        snapshot.load_state_dict(self, state)

    def _drop(self, slot: int, why: Gone) -> None:
        event_id = self._ids[slot]
        if event_id is None:
            return
        self._ids[slot] = None
        del self._seq_of[event_id]
        self._gone.remember(event_id, why, self._served, slot)
        if why is Gone.EXPIRED:
            self.event_counts.expired += 1
        else:
            self.event_counts.evicted += 1
