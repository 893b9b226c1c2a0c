"""The pending ledger: served embeddings waiting for their delayed labels.

A label is joined with exactly the embedding and probabilities that were served, so
learning never recomputes (no training/serving skew). Entries live in a ring buffer of
``max_entries`` rows (oldest evicted first) and expire ``ttl_s`` after their event time,
measured on the stream clock (the largest event time seen), so replaying the same input
gives the same result.

The ledger also remembers, for every served event, where it was read (topic, partition,
offset) and what was served (probabilities, event time, ``head_seq``): while it is pending,
and after it left (joined, expired, evicted) in a second ring of the last ``max_entries``
finished events. That memory tells a *redelivery* (the same event read again at the same
offset) from a *duplicate* (the same ``event_id`` at another offset), and lets a
redelivered event be re-emitted exactly as it was first served.
"""

from __future__ import annotations

import logging
import operator
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, fields
from enum import Enum, StrEnum
from typing import Any

import numpy as np

from streamapp.events import Feedback, JoinedExamples, SourcePosition

__all__ = ["EventCounts", "JoinedExamples", "LabelCounts", "PendingLedger", "Seen", "ServedRows"]

logger = logging.getLogger(__name__)


class _Gone(StrEnum):
    JOINED = "joined"
    EXPIRED = "expired"
    EVICTED = "evicted"


_GONE_CODES = list(_Gone)  # the order of the codes in ``gone_why`` snapshots
_GONE_INDEX = {why: i for i, why in enumerate(_GONE_CODES)}
_PARTITION, _OFFSET = operator.attrgetter("partition"), operator.attrgetter("offset")


class Seen(Enum):
    """What the ledger knows about an event that arrives to be scored."""

    NEW = "new"
    REDELIVERED = "redelivered"  # the same event_id read again at the same position
    DUPLICATE = "duplicate"  # the same event_id at another position (or an unknown one)


@dataclass(slots=True)
class LabelCounts:
    """Cumulative outcomes of the labels joined against the ledger.

    Every label ends in exactly one of these; a label still parked (waiting for its event)
    is in none yet, so ``joined + late + orphan + duplicate + parked`` is every label seen.
    """

    joined: int = 0
    late: int = 0
    orphan: int = 0
    duplicate: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(slots=True)
class EventCounts:
    """Cumulative scored events that left the ledger without a label."""

    expired: int = 0
    evicted: int = 0

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class ServedRows:
    """What was served for some events, row by row: enough to re-emit their predictions."""

    proba: np.ndarray  # (n, n_classes) float64
    event_ts: np.ndarray  # (n,) float64
    head_seq: np.ndarray  # (n,) int64


def _known(cls: type, counts: dict[str, Any]) -> Any:
    """``cls`` from a snapshot's counts, ignoring names an older version wrote."""
    return cls(**{f.name: int(counts.get(f.name, 0)) for f in fields(cls)})


class _Served:
    """Columns of what was served, one row per slot of a ring buffer."""

    COLUMNS = ("proba", "ts", "head_seq", "topic", "partition", "offset")

    def __init__(self, capacity: int, n_classes: int) -> None:
        # probabilities in float64, as the head served them: a re-emitted prediction is equal
        self.proba = np.zeros((capacity, n_classes), np.float64)
        self.ts = np.zeros(capacity, np.float64)
        self.head_seq = np.zeros(capacity, np.int64)
        self.topic = np.full(capacity, -1, np.int32)  # index into the ledger's topic names
        self.partition = np.full(capacity, -1, np.int32)
        self.offset = np.full(capacity, -1, np.int64)

    def copy_row(self, slot: int, other: _Served, other_slot: int) -> None:
        for name in self.COLUMNS:
            getattr(self, name)[slot] = getattr(other, name)[other_slot]

    def copy_rows(self, slots: list[int], other: _Served, other_slots: list[int]) -> None:
        """``copy_row`` for many rows at once (a slot written twice keeps the last row)."""
        to, at = np.asarray(slots, np.intp), np.asarray(other_slots, np.intp)
        for name in self.COLUMNS:
            getattr(self, name)[to] = getattr(other, name)[at]

    def take(self, index: np.ndarray) -> dict[str, np.ndarray]:
        return {name: getattr(self, name)[index] for name in self.COLUMNS}

    def put(self, index: np.ndarray, columns: dict[str, np.ndarray]) -> None:
        for name in self.COLUMNS:
            getattr(self, name)[index] = columns[name]


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
    ) -> None:
        self.max_entries = max_entries
        self.embedding_dim = embedding_dim
        self.n_classes = n_classes
        self.ttl_s = ttl_s
        self.early_label_ttl_s = early_label_ttl_s
        self.max_parked = max_parked
        self._reset()

    def _reset(self) -> None:
        cap = self.max_entries
        self._emb = np.zeros((cap, self.embedding_dim), np.float32)
        self._served = _Served(cap, self.n_classes)
        self._ids: list[str | None] = [None] * cap
        self._seq_of: dict[str, int] = {}
        self._oldest = 0  # sequence number of the oldest slot that may be live
        self._next = 0
        # finished events, a ring of the last max_entries: id -> sequence number in the ring
        self._gone: dict[str, int] = {}
        self._gone_ids: list[str | None] = [None] * cap
        self._gone_why = np.zeros(cap, np.int8)
        self._gone_served = _Served(cap, self.n_classes)
        self._gone_next = 0
        self._topics: list[str] = []
        self._topic_index: dict[str, int] = {}
        self._early: OrderedDict[str, Feedback] = OrderedDict()
        self.counts = LabelCounts()
        self.event_counts = EventCounts()

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
        self,
        ids: Sequence[str],
        embeddings: np.ndarray,
        proba: np.ndarray,
        ts: np.ndarray,
        *,
        sources: Sequence[SourcePosition] | None = None,
        head_seq: np.ndarray | None = None,
    ) -> list[Feedback]:
        """Record served rows (where they were read, which head scored them); returns parked
        labels that were waiting for these events."""
        n = len(ids)
        topic, partition, offset = self._positions(sources, n)
        columns = {
            "proba": proba,
            "ts": ts,
            "head_seq": np.zeros(n, np.int64) if head_seq is None else head_seq,
            "topic": topic,
            "partition": partition,
            "offset": offset,
        }
        # in chunks of at most max_entries: a chunk never evicts its own rows, so a row is
        # evicted (and remembered) before its slot is written over
        for start in range(0, n, self.max_entries):
            rows = slice(start, min(start + self.max_entries, n))
            slots = self._claim_slots(ids[rows])
            self._emb[slots] = embeddings[rows]
            self._served.put(slots, {name: column[rows] for name, column in columns.items()})
        if not self._early:
            return []
        return [self._early.pop(event_id) for event_id in ids if event_id in self._early]

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
                self._drop(slot, _Gone.EVICTED)
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
            return np.full(n, -1, np.int32), np.full(n, -1, np.int32), np.full(n, -1, np.int64)
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

    def _locate(self, event_id: str) -> tuple[_Served, int] | None:
        seq = self._seq_of.get(event_id)
        if seq is not None:
            return self._served, seq % self.max_entries
        seq = self._gone.get(event_id)
        if seq is not None:
            return self._gone_served, seq % self.max_entries
        return None

    def knows_any(self, ids: Sequence[str]) -> bool:
        """Whether any of ``ids`` is pending or remembered (else all are new)."""
        return any(map(self._seq_of.__contains__, ids)) or any(map(self._gone.__contains__, ids))

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
        out = ServedRows(np.zeros((n, self.n_classes)), np.zeros(n), np.zeros(n, np.int64))
        for i, event_id in enumerate(ids):
            found = self._locate(event_id)
            if found is None:
                raise KeyError(event_id)
            served, slot = found
            out.proba[i] = served.proba[slot]
            out.event_ts[i] = served.ts[slot]
            out.head_seq[i] = served.head_seq[slot]
        return out

    def join(self, feedback: Sequence[Feedback]) -> JoinedExamples:
        """Match labels to pending rows; count late, duplicate and orphan labels, park early
        ones (at most ``max_parked``: beyond, the oldest parked label becomes an orphan)."""
        slots: list[int] = []
        matched: list[Feedback] = []
        joined_at: dict[str, int] = {}  # this batch's joined events: their gone sequence
        cap, pending, ids, first = self.max_entries, self._seq_of, self._ids, self._gone_next
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
            gone = joined_at.get(fb.event_id, self._gone.get(fb.event_id))
            if gone is not None and gone < first + len(matched) - cap:
                gone = None
            if gone is not None:
                joined = gone >= first or _GONE_CODES[self._gone_why[gone % cap]] is _Gone.JOINED
                if joined:
                    self.counts.duplicate += 1
                else:
                    self.counts.late += 1
            elif fb.event_id in self._early:
                self.counts.duplicate += 1
            elif self.early_label_ttl_s > 0 and self.max_parked > 0:
                self._park(fb)
            else:
                self.counts.orphan += 1
        if matched:  # remembered as joined, what was served copied for all of them at once
            rings = self._remember_joined([fb.event_id for fb in matched])
            self._gone_served.copy_rows(rings, self._served, slots)
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
            labels=np.fromiter((fb.label for fb in matched), np.int64, len(matched)),
            proba=self._served.proba[index].copy(),
            delays=np.maximum(labels_ts - self._served.ts[index], 0.0),
            sources=[fb.source for fb in matched],
        )

    def _park(self, fb: Feedback) -> None:
        self._early[fb.event_id] = fb
        if len(self._early) > self.max_parked:  # a count bound, whatever the stream time says
            self._early.popitem(last=False)
            self.counts.orphan += 1

    def expire(self, clock: float) -> None:
        """Drop rows older than ``ttl_s`` and parked labels older than ``early_label_ttl_s``."""
        cap = self.max_entries
        horizon = clock - self.ttl_s
        while self._oldest < self._next:
            slot = self._oldest % cap
            if self._ids[slot] is not None:
                if self._served.ts[slot] >= horizon:
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
        """Pending rows in insertion order, the memory of finished events, parked labels."""
        cap = self.max_entries
        slots = [s % cap for s in range(self._oldest, self._next) if self._ids[s % cap] is not None]
        index = np.asarray(slots, dtype=np.int64)
        gone_ids, remembered = self._gone_ids, self._gone
        # the ring slots whose id is remembered at this sequence (not at a later one); inline,
        # since a snapshot walks up to max_entries of them
        gone = np.asarray(
            [
                s % cap
                for s in range(max(self._gone_next - cap, 0), self._gone_next)
                if (event_id := gone_ids[s % cap]) is not None and remembered.get(event_id) == s
            ],
            np.int64,
        )
        early = list(self._early.values())
        return {
            "topics": list(self._topics),
            "ids": [self._ids[s] for s in slots],
            "emb": self._emb[index],
            **self._served.take(index),
            "gone_ids": [self._gone_ids[s] for s in gone.tolist()],
            "gone_why": self._gone_why[gone],
            "gone": self._gone_served.take(gone),
            "early_ids": [fb.event_id for fb in early],
            "early_labels": np.array([fb.label for fb in early], np.int64),
            "early_ts": np.array([fb.ts for fb in early], np.float64),
            "counts": self.counts.as_dict(),
            "event_counts": self.event_counts.as_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a snapshot of an older version (no positions) loads
        with unknown positions, so its events repeat as duplicates, as they used to."""
        self._reset()
        for topic in state.get("topics", []):
            self._topic_id(topic)
        ids = state["ids"]
        n = len(ids)
        self._restore_pending(ids, state["emb"], self._columns(state, n))
        self._restore_gone(state, len(state["gone_ids"]))
        self._early = OrderedDict(
            (event_id, Feedback(event_id, int(label), float(ts)))
            for event_id, label, ts in zip(
                state["early_ids"], state["early_labels"], state["early_ts"], strict=True
            )
        )
        self.counts = _known(LabelCounts, state["counts"])
        old = state["counts"]  # older snapshots kept the event outcomes among the labels'
        self.event_counts = _known(
            EventCounts,
            state.get(
                "event_counts",
                {"expired": old.get("expired_events", 0), "evicted": old.get("evicted_events", 0)},
            ),
        )

    def _columns(self, state: dict[str, Any], n: int) -> dict[str, np.ndarray]:
        defaults = {
            "head_seq": np.zeros(n, np.int64),
            "topic": np.full(n, -1, np.int32),
            "partition": np.full(n, -1, np.int32),
            "offset": np.full(n, -1, np.int64),
        }
        return {name: np.asarray(state.get(name, defaults.get(name))) for name in _Served.COLUMNS}

    def _restore_pending(
        self, ids: list[str], emb: np.ndarray, columns: dict[str, np.ndarray]
    ) -> None:
        keep = slice(max(len(ids) - self.max_entries, 0), len(ids))  # a smaller ledger: newest
        ids = ids[keep]
        slots = np.arange(len(ids))
        self._emb[slots] = emb[keep]
        self._served.put(slots, {name: column[keep] for name, column in columns.items()})
        for slot, event_id in enumerate(ids):
            self._ids[slot] = event_id
            self._seq_of[event_id] = slot
        self._next = len(ids)

    def _restore_gone(self, state: dict[str, Any], n: int) -> None:
        gone = state.get("gone")
        why = state["gone_why"]
        if gone is None:  # older snapshots: the reasons as names, nothing served kept
            why = np.array([_GONE_CODES.index(_Gone(w)) for w in why], np.int8)
            gone = {
                **self._columns({}, n),
                "proba": np.zeros((n, self.n_classes)),
                "ts": np.zeros(n),
            }
        keep = slice(max(n - self.max_entries, 0), n)
        ids = state["gone_ids"][keep]
        slots = np.arange(len(ids))
        self._gone_why[slots] = np.asarray(why, np.int8)[keep]
        self._gone_served.put(slots, {name: np.asarray(gone[name])[keep] for name in gone})
        for slot, event_id in enumerate(ids):
            self._gone_ids[slot] = event_id
            self._gone[event_id] = slot
        self._gone_next = len(ids)

    def _drop(self, slot: int, why: _Gone) -> None:
        event_id = self._ids[slot]
        if event_id is None:
            return
        self._ids[slot] = None
        del self._seq_of[event_id]
        self._remember(event_id, why, slot)
        if why is _Gone.EXPIRED:
            self.event_counts.expired += 1
        else:
            self.event_counts.evicted += 1

    def _remember_joined(self, event_ids: list[str]) -> list[int]:
        """:meth:`_remember` for a batch of joined events, without copying what was served
        (the caller copies their rows at once); returns their ring slots."""
        cap, gone, gone_ids = self.max_entries, self._gone, self._gone_ids
        first = self._gone_next
        rings = [seq % cap for seq in range(first, first + len(event_ids))]
        for seq, ring, event_id in zip(
            range(first, first + len(event_ids)), rings, event_ids, strict=True
        ):
            old = gone_ids[ring]
            if old is not None and gone.get(old) == seq - cap:
                del gone[old]
            gone_ids[ring] = event_id
            gone[event_id] = seq
        self._gone_why[rings] = _GONE_INDEX[_Gone.JOINED]
        self._gone_next = first + len(event_ids)
        return rings

    def _remember(self, event_id: str, why: _Gone, slot: int) -> int:
        """Remember ``event_id`` as gone, with what was served from ``slot``; returns its
        ring slot."""
        # bounded memory of finished events: enough to tell late and duplicate labels from
        # orphans, and a redelivery from a duplicate, and to re-emit what was served
        cap = self.max_entries
        seq = self._gone_next
        ring = seq % cap
        old = self._gone_ids[ring]
        if old is not None and self._gone.get(old) == seq - cap:
            del self._gone[old]
        self._gone_ids[ring] = event_id
        self._gone[event_id] = seq
        self._gone_why[ring] = _GONE_INDEX[why]
        self._gone_served.copy_row(ring, self._served, slot)
        self._gone_next = seq + 1
        return ring
