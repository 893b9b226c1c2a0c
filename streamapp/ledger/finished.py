"""The memory of finished events: the last ``capacity`` events that left the pending ring.

An event leaves the pending ring joined, expired or evicted; this ring remembers why and what
was served for it (with where it was read), so a label that comes after it is told late from
duplicate, and an event read again is told a *redelivery* (the same ``event_id`` at the same
position: re-emit what was first served) from a *duplicate* (the same ``event_id`` elsewhere).
"""

from __future__ import annotations

from enum import Enum, StrEnum

import numpy as np

from streamapp.ledger.served import ServedColumns

__all__ = ["GONE_CODES", "GONE_INDEX", "FinishedEvents", "Gone", "Seen"]


class Gone(StrEnum):
    """Why an event left the pending ring."""

    JOINED = "joined"
    EXPIRED = "expired"
    EVICTED = "evicted"


GONE_CODES = list(Gone)  # the order of the codes in ``gone_why`` snapshots
GONE_INDEX = {why: i for i, why in enumerate(GONE_CODES)}


class Seen(Enum):
    """What the ledger knows about an event that arrives to be scored."""

    NEW = "new"
    REDELIVERED = "redelivered"  # the same event_id read again at the same position
    DUPLICATE = "duplicate"  # the same event_id at another position (or an unknown one)


class FinishedEvents:
    """A ring of the last ``capacity`` finished events: why each left, what was served.

    ``index`` maps an event id to its sequence number in the ring (its slot is that modulo
    ``capacity``); an id finished twice is remembered at its latest sequence.

    >>> pending = ServedColumns(2, n_classes=1)
    >>> pending.ts[:] = [5.0, 6.0]
    >>> finished = FinishedEvents(2, n_classes=1)
    >>> [finished.remember(event_id, Gone.EXPIRED, pending, 0) for event_id in "abc"]
    [0, 1, 0]
    >>> sorted(finished.index), finished.remembered_slots().tolist()
    (['b', 'c'], [1, 0])
    >>> finished.remember_joined(["d"], pending, [1]), finished.served.ts.tolist()
    ([1], [5.0, 6.0])
    """

    def __init__(self, capacity: int, n_classes: int) -> None:
        self.capacity = capacity
        self.index: dict[str, int] = {}
        self.ids: list[str | None] = [None] * capacity
        self.why = np.zeros(capacity, np.int8)  # codes: indices into GONE_CODES
        self.served = ServedColumns(capacity, n_classes)
        self.next = 0  # the sequence number the next finished event gets

    def __len__(self) -> int:
        return len(self.index)

    def remember(self, event_id: str, why: Gone, source: ServedColumns, slot: int) -> int:
        """Remember ``event_id`` as gone, with what was served from ``source``'s ``slot``;
        returns its ring slot."""
        # bounded memory of finished events: enough to tell late and duplicate labels from
        # orphans, and a redelivery from a duplicate, and to re-emit what was served
        cap = self.capacity
        seq = self.next
        ring = seq % cap
        old = self.ids[ring]
        if old is not None and self.index.get(old) == seq - cap:
            del self.index[old]
        self.ids[ring] = event_id
        self.index[event_id] = seq
        self.why[ring] = GONE_INDEX[why]
        self.served.copy_row(ring, source, slot)
        self.next = seq + 1
        return ring

    def remember_joined(
        self, event_ids: list[str], source: ServedColumns, slots: list[int]
    ) -> list[int]:
        """:meth:`remember` for a batch of joined events, what was served copied from
        ``source``'s ``slots`` for all of them at once; returns their ring slots."""
        cap, gone, gone_ids = self.capacity, self.index, self.ids
        first = self.next
        rings = [seq % cap for seq in range(first, first + len(event_ids))]
        for seq, ring, event_id in zip(
            range(first, first + len(event_ids)), rings, event_ids, strict=True
        ):
            old = gone_ids[ring]
            if old is not None and gone.get(old) == seq - cap:
                del gone[old]
            gone_ids[ring] = event_id
            gone[event_id] = seq
        self.why[rings] = GONE_INDEX[Gone.JOINED]
        self.next = first + len(event_ids)
        self.served.copy_rows(rings, source, slots)
        return rings

    def remembered_slots(self) -> np.ndarray:
        """The ring slots of the remembered events, oldest first."""
        cap, gone_ids, remembered = self.capacity, self.ids, self.index
        # the ring slots whose id is remembered at this sequence (not at a later one); inline,
        # since a snapshot walks up to capacity of them
        return np.asarray(
            [
                s % cap
                for s in range(max(self.next - cap, 0), self.next)
                if (event_id := gone_ids[s % cap]) is not None and remembered.get(event_id) == s
            ],
            np.int64,
        )
