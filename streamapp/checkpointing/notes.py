"""Commit notes: what the outputs of a transaction had reached, carried as the metadata of
the input offsets the same transaction commits, so the two can never disagree. Pure.

A restore reads the group's committed offsets anyway; their notes tell it where the last
committed drift report cut the stream, which the (older) snapshot cannot know.

>>> note = encode_note("group.w1", DriftCursor(reports=3, events=1200, labels=1100))
>>> committed_cursor([note, encode_note("group.w2", DriftCursor(9, 9, 9)), "", "{"], "group.w1")
DriftCursor(reports=3, events=1200, labels=1100)
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import orjson

from streamapp.drift.monitor import DriftCursor

__all__ = ["committed_cursor", "encode_note"]

logger = logging.getLogger(__name__)


def encode_note(owner: str, cursor: DriftCursor) -> str:
    """The note of ``owner`` (a transactional id): well under Kafka's 4 KiB metadata limit."""
    drift = [cursor.reports, cursor.events, cursor.labels]
    return orjson.dumps({"owner": owner, "drift": drift}).decode()


def committed_cursor(notes: Iterable[str | None], owner: str) -> DriftCursor | None:
    """The newest cursor among ``owner``'s notes (partitions it committed last carry the
    newest); None when it has none. Other owners' notes and foreign metadata are ignored."""
    cursors = []
    for note in notes:
        try:
            doc = orjson.loads(note or b"")
            if doc["owner"] == owner:
                cursors.append(DriftCursor(*map(int, doc["drift"])))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue  # not ours: an offset committed by another tool
    return max(cursors, key=lambda c: (c.reports, c.events, c.labels), default=None)
