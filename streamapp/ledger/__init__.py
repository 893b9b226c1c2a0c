"""The ledger: served embeddings waiting for their delayed labels, and the memory of events.

The package's parts, each one job:

- :mod:`~streamapp.ledger.pending`: :class:`PendingLedger`, the ring of served rows waiting
  for labels (add, join, expire, eviction), the façade that composes the others;
- :mod:`~streamapp.ledger.finished`: the ring of finished events, which tells a redelivery
  from a duplicate and re-emits what was first served;
- :mod:`~streamapp.ledger.served`: the columns of what was served, kept by both rings;
- :mod:`~streamapp.ledger.parking`: labels that beat their event, parked until it is scored;
- :mod:`~streamapp.ledger.counts`: the label and event outcome counters;
- :mod:`~streamapp.ledger.snapshot`: the state dict and the migrations of older layouts.
"""

from __future__ import annotations

from streamapp.events import JoinedExamples
from streamapp.ledger.counts import EventCounts, LabelCounts
from streamapp.ledger.finished import Seen
from streamapp.ledger.pending import PendingLedger
from streamapp.ledger.served import ServedRows

__all__ = ["EventCounts", "JoinedExamples", "LabelCounts", "PendingLedger", "Seen", "ServedRows"]
