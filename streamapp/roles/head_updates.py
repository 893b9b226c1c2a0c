"""Head snapshots on the compacted ``model-updates`` topic: their format, the newest one,
and a follower that hands a scorer each newer one (see :mod:`streamapp.roles.learner`)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.kafka.config import reader_config
from streamapp.kafka.tail import PartitionTail
from streamapp.kafka.topic_reader import read_to_end
from streamapp.settings import Settings

__all__ = ["HeadFollower", "HeadSnapshot", "read_latest_head"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class HeadSnapshot:
    """One ``model-updates`` record: the head after ``head_seq`` examples."""

    model_name: str
    model_version: str
    head_seq: int
    head: dict[str, Any]
    offsets: dict[tuple[str, int], int]  # next example offset per partition
    ts: float

    def encode(self) -> bytes:
        return encode_state(
            {
                "model": {"name": self.model_name, "version": self.model_version},
                "head_seq": self.head_seq,
                "head": self.head,
                "offsets": [[t, p, o] for (t, p), o in sorted(self.offsets.items())],
                "ts": self.ts,
            }
        )

    @classmethod
    def decode(cls, blob: bytes) -> HeadSnapshot:
        state = decode_state(blob)
        return cls(
            state["model"]["name"],
            state["model"]["version"],
            int(state["head_seq"]),
            state["head"],
            {(t, int(p)): int(o) for t, p, o in state["offsets"]},
            float(state["ts"]),
        )


class HeadFollower:
    """Reads ``model-updates`` outside any group, in the background, only when it has new
    records; ``poll()`` returns a newer snapshot of this model's head, once, or ``None``."""

    def __init__(self, settings: Settings, model_name: str, model_version: str) -> None:
        self.model_name = model_name
        self.model_version = model_version
        self.head_seq = -1
        # a head is due every learner.publish_every_examples examples: looking for new ones
        # five times a second keeps a scorer at most ~0.2 s behind the learner
        self._tail = PartitionTail(
            reader_config(settings, "head-follower"),
            settings.topics.model_updates,
            name="head-follower",
        )

    def poll(self) -> HeadSnapshot | None:
        newest = None
        for msg in self._tail.poll():
            if (msg.key() or b"") != self.model_name.encode():
                continue
            try:
                snapshot = HeadSnapshot.decode(msg.value() or b"")
            except (ValueError, KeyError, OSError) as exc:
                logger.warning("unreadable head snapshot at offset %s: %s", msg.offset(), exc)
                continue
            if snapshot.model_version == self.model_version and snapshot.head_seq > self.head_seq:
                newest = snapshot
        if newest is not None:
            self.head_seq = newest.head_seq
        return newest

    def close(self) -> None:
        self._tail.close()


def read_latest_head(
    settings: Settings, model_name: str, timeout: float = 30.0
) -> HeadSnapshot | None:
    """The newest snapshot of ``model_name`` on ``model-updates`` (read to its end)."""
    latest = None
    for msg in read_to_end(settings, settings.topics.model_updates, "head-restore", timeout):
        if (msg.key() or b"") == model_name.encode():
            snapshot = HeadSnapshot.decode(msg.value() or b"")
            if latest is None or snapshot.head_seq >= latest.head_seq:
                latest = snapshot
    return latest
