"""Ledger snapshots: the state dict of a :class:`~streamapp.ledger.PendingLedger`, and the
migrations that bring a snapshot of an older layout up to the current one before it loads.

A snapshot carries no version field (a new one is what the ledger has always written); its
version is told from its layout by :func:`snapshot_version`:

1. pending rows and finished ids only: ``gone_why`` as names, nothing served remembered, no
   positions, the event outcomes counted among the labels' (``expired_events``, ...);
2. where each event was read (``topics``, ``topic``, ``partition``, ``offset``),
   which head served it (``head_seq``), what was served for finished events (``gone``),
   ``gone_why`` as codes, ``event_counts`` apart from the labels' ``counts``;
3. (current) the conformal threshold each row was served with (``threshold``, NaN: none).

>>> snapshot_version({"ids": [], "gone_ids": [], "gone_why": []})
1
>>> v2 = upgrade({"ids": [], "gone_ids": [], "gone_why": [], "counts": {}}, n_classes=2)
>>> snapshot_version(v2), v2["topics"], v2["event_counts"], v2["gone"]["proba"].shape
(3, [], {'expired': 0, 'evicted': 0}, (0, 2))
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np

from streamapp.events import Feedback
from streamapp.ledger.counts import EventCounts, LabelCounts
from streamapp.ledger.finished import GONE_INDEX, FinishedEvents, Gone
from streamapp.ledger.served import ServedColumns, unknown_positions

if TYPE_CHECKING:
    from streamapp.ledger.pending import PendingLedger

__all__ = ["SNAPSHOT_VERSION", "load_state_dict", "snapshot_version", "state_dict", "upgrade"]

SNAPSHOT_VERSION = 3  # the layout state_dict writes

_Counts = TypeVar("_Counts", LabelCounts, EventCounts)

# what a version 1 snapshot lacks
_ADDED_IN_2 = ("topics", "head_seq", "topic", "partition", "offset", "gone", "event_counts")


def state_dict(ledger: PendingLedger) -> dict[str, Any]:
    """Pending rows in insertion order, the memory of finished events, parked labels."""
    cap = ledger.max_entries
    ids = ledger._ids
    slots = [s % cap for s in range(ledger._oldest, ledger._next) if ids[s % cap] is not None]
    index = np.asarray(slots, dtype=np.int64)
    finished = ledger._gone
    gone = finished.remembered_slots()
    early = list(ledger._early.labels.values())
    return {
        "topics": list(ledger._topics),
        "ids": [ids[s] for s in slots],
        "emb": ledger._emb[index],
        **ledger._served.take(index),
        "gone_ids": [finished.ids[s] for s in gone.tolist()],
        "gone_why": finished.why[gone],
        "gone": finished.served.take(gone),
        "early_ids": [fb.event_id for fb in early],
        "early_labels": np.array([fb.label for fb in early], ledger.label_dtype),
        "early_ts": np.array([fb.ts for fb in early], np.float64),
        "counts": ledger.counts.as_dict(),
        "event_counts": ledger.event_counts.as_dict(),
    }


def load_state_dict(ledger: PendingLedger, state: dict[str, Any]) -> None:
    """Restore :func:`state_dict` of any version into ``ledger`` (``state`` is not changed);
    a version 1 snapshot (no positions) loads with unknown positions, so its events repeat as
    duplicates, as they used to."""
    state = upgrade(state, ledger.n_classes)
    ledger._reset()
    for topic in state["topics"]:
        ledger._topic_id(topic)
    columns = {name: np.asarray(state[name]) for name in ServedColumns.COLUMNS}
    _restore_pending(ledger, state["ids"], state["emb"], columns)
    _restore_gone(ledger._gone, state["gone_ids"], state["gone_why"], state["gone"])
    ledger._early.labels = OrderedDict(
        (event_id, Feedback(event_id, label.item(), float(ts)))
        for event_id, label, ts in zip(
            state["early_ids"],
            np.asarray(state["early_labels"], ledger.label_dtype),
            state["early_ts"],
            strict=True,
        )
    )
    ledger.counts = _known(LabelCounts, state["counts"])
    ledger.event_counts = _known(EventCounts, state["event_counts"])


def snapshot_version(state: dict[str, Any]) -> int:
    """The layout version of a ledger snapshot (see the module's docstring)."""
    if state.get("gone") is None or any(name not in state for name in _ADDED_IN_2):
        return 1
    if "threshold" not in state or "threshold" not in state["gone"]:
        return 2
    return 3


def upgrade(state: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """``state`` in the current layout (``SNAPSHOT_VERSION``), migrated one version at a time;
    ``state`` itself is not changed."""
    for version in range(snapshot_version(state), SNAPSHOT_VERSION):
        state = _MIGRATIONS[version](state, n_classes)
    return state


def _v1_to_v2(state: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """Unknown positions, head 0, nothing served for finished events (zeros), the reasons as
    codes, the event outcomes out of the labels' counts; what the snapshot has is kept."""
    n = len(state["ids"])
    old = state["counts"]  # version 1 kept the event outcomes among the labels'
    new = {
        "topics": [],
        **_unserved(n, n_classes),
        "event_counts": {
            "expired": old.get("expired_events", 0),
            "evicted": old.get("evicted_events", 0),
        },
        **state,
    }
    if state.get("gone") is None:  # the reasons as names, nothing served kept
        n_gone = len(state["gone_ids"])
        new["gone_why"] = np.array([GONE_INDEX[Gone(why)] for why in state["gone_why"]], np.int8)
        new["gone"] = {
            **_unserved(n_gone, n_classes),
            "proba": np.zeros((n_gone, n_classes)),
            "ts": np.zeros(n_gone),
        }
    return new


def _v2_to_v3(state: dict[str, Any], n_classes: int) -> dict[str, Any]:
    """No conformal threshold known for any row (NaN): their labels do not calibrate, a
    redelivery is re-emitted without a set."""
    gone = state["gone"]
    return {
        **state,
        "threshold": np.full(len(state["ids"]), np.nan),
        "gone": {**gone, "threshold": np.full(len(gone["ts"]), np.nan)},
    }


_MIGRATIONS: dict[int, Callable[[dict[str, Any], int], dict[str, Any]]] = {
    1: _v1_to_v2,
    2: _v2_to_v3,
}


def _unserved(n: int, n_classes: int) -> dict[str, np.ndarray]:
    """The columns a version 1 snapshot lacks for ``n`` rows: head 0, unknown positions."""
    topic, partition, offset = unknown_positions(n)
    return {
        "head_seq": np.zeros(n, np.int64),
        "topic": topic,
        "partition": partition,
        "offset": offset,
    }


def _known(cls: type[_Counts], counts: dict[str, Any]) -> _Counts:
    """``cls`` from a snapshot's counts, ignoring names an older version wrote."""
    return cls(**{f.name: int(counts.get(f.name, 0)) for f in fields(cls)})


def _restore_pending(
    ledger: PendingLedger, ids: list[str], emb: np.ndarray, columns: dict[str, np.ndarray]
) -> None:
    keep = slice(max(len(ids) - ledger.max_entries, 0), len(ids))  # a smaller ledger: newest
    ids = ids[keep]
    slots = np.arange(len(ids))
    ledger._emb[slots] = emb[keep]
    ledger._served.put(slots, {name: column[keep] for name, column in columns.items()})
    for slot, event_id in enumerate(ids):
        ledger._ids[slot] = event_id
        ledger._seq_of[event_id] = slot
    ledger._next = len(ids)


def _restore_gone(
    finished: FinishedEvents, ids: list[str], why: np.ndarray, gone: dict[str, np.ndarray]
) -> None:
    n = len(ids)
    keep = slice(max(n - finished.capacity, 0), n)
    ids = ids[keep]
    slots = np.arange(len(ids))
    finished.why[slots] = np.asarray(why, np.int8)[keep]
    finished.served.put(slots, {name: np.asarray(gone[name])[keep] for name in gone})
    for slot, event_id in enumerate(ids):
        finished.ids[slot] = event_id
        finished.index[event_id] = slot
    finished.next = len(ids)
