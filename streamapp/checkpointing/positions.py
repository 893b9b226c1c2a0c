"""Where each input partition resumes after an assignment or a restore: the group's committed
offset, or, in exactly-once, the restored snapshot's offset when it is behind the committed
one (the inputs in between are a replay: processed again, published never). Pure: no Kafka
here; the consumer answers the committed offsets.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from streamapp.kafka.config import consumer_config
from streamapp.settings import Settings

__all__ = ["resume_positions", "reset_position"]

logger = logging.getLogger(__name__)

Partition = tuple[str, int]


def resume_positions(
    partitions: Iterable[Partition],
    committed: Mapping[Partition, int],
    snapshot: Mapping[Partition, int],
) -> tuple[dict[Partition, int], dict[Partition, int]]:
    """Where each partition with a committed offset resumes, and up to which offset that is
    a replay (for those whose snapshot offset is behind the committed one). A partition
    never committed is left out: it starts where the reset policy says.

    >>> resume_positions(
    ...     [("f", 0), ("f", 1), ("f", 2)],
    ...     committed={("f", 0): 10, ("f", 1): 5},
    ...     snapshot={("f", 0): 7, ("f", 1): 5},
    ... )
    ({('f', 0): 7, ('f', 1): 5}, {('f', 0): 10})
    """
    starts: dict[Partition, int] = {}
    replays: dict[Partition, int] = {}
    for tp in partitions:
        if tp not in committed:
            continue
        restored = snapshot.get(tp)
        if restored is not None and 0 <= restored < committed[tp]:
            starts[tp], replays[tp] = restored, committed[tp]
        else:
            starts[tp] = committed[tp]
    return starts, replays


def reset_position(settings: Settings) -> int:
    """Where a never-committed partition starts, as the consumer's reset policy says."""
    reset = str(consumer_config(settings).get("auto.offset.reset", "earliest"))
    return OFFSET_BEGINNING if reset in ("earliest", "smallest", "beginning") else OFFSET_END
