"""Fakes the unit tests share: a clock moved by hand, a Kafka message, and the worker's
consumer, delivery and state store as the code under test uses them.

``FakeClock`` stands in for ``time.monotonic`` wherever the code under test takes a
``clock`` argument: the test sets ``clock.now`` (or calls ``advance``) instead of sleeping.

``FakeMessage`` has the parts of ``confluent_kafka.Message`` the code reads: where it is
(topic, partition, offset), what it carries (value, key, headers), when (timestamp) and an
error, for the events librdkafka hands out as messages (partition EOF, fatal errors).

``FakeBatchConsumer`` is a :class:`~streamapp.kafka.consumer.BatchConsumer` as the worker's
loop and delivery use it, ``FakeDelivery`` delivery as the loop sees it, and
``FakeStateStore`` the exactly-once state store.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

from streamapp.batching import BatchPolicy
from streamapp.checkpointing.state_store import Restored
from streamapp.kafka.consumer import PolledBatch

__all__ = [
    "DEFAULT_TIMESTAMP_MS",
    "FakeBatchConsumer",
    "FakeClock",
    "FakeDelivery",
    "FakeMessage",
    "FakeStateStore",
]

DEFAULT_TIMESTAMP_MS = 1_700_000_000_000
"""A message's Kafka timestamp unless the test gives one: 2023-11-14, milliseconds."""


class FakeClock:
    """Seconds that pass only when the test says so."""

    def __init__(self, now: float = 0.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock on by ``seconds``; returns the new time."""
        self.now += seconds
        return self.now


class FakeMessage:
    """One record as a consumer returns it.

    Where it is comes positionally, as in ``FakeMessage("features", 0, 7)``; the rest by name.
    The key defaults to ``b"k"`` because the project's records are keyed; pass ``key=None``
    for a record without one.
    """

    def __init__(
        self,
        topic: str,
        partition: int = 0,
        offset: int = 0,
        timestamp_ms: int = DEFAULT_TIMESTAMP_MS,
        *,
        value: bytes | None = None,
        key: bytes | None = b"k",
        headers: list[tuple[str, bytes]] | None = None,
        error: KafkaError | None = None,
        timestamp_type: int = TIMESTAMP_CREATE_TIME,
    ) -> None:
        self._topic, self._partition, self._offset = topic, partition, offset
        self._timestamp = (timestamp_type, timestamp_ms)
        self._value, self._key, self._headers, self._error = value, key, headers, error

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def timestamp(self) -> tuple[int, int]:
        return self._timestamp

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def error(self) -> KafkaError | None:
        return self._error

    def __repr__(self) -> str:
        return f"{self._topic}[{self._partition}]@{self._offset}"


class FakeBatchConsumer:
    """The worker's consumer: ``batches`` handed out in turn (empty ones after), the
    ``assignment``, the ``lags`` it reports, the offsets committed for the group and where
    delivery last rewound it to."""

    def __init__(
        self,
        *batches: PolledBatch,
        assignment: set[tuple[str, int]] | None = None,
        committed: dict[tuple[str, int], int] | None = None,
    ) -> None:
        self.batches = list(batches)
        self.assignment: set[tuple[str, int]] = set(assignment or ())
        self.lags: dict[tuple[str, int], int] = {}
        self.committed_offsets = dict(committed or {})
        self.rewound: dict[tuple[str, int], int] = {}

    def poll_batch(self, policy: BatchPolicy) -> PolledBatch:
        return self.batches.pop(0) if self.batches else PolledBatch()

    def lag(self) -> dict[tuple[str, int], int]:
        return dict(self.lags)

    def committed(self, partitions: Iterable[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """The committed offset of each of ``partitions`` that has one."""
        return {tp: self.committed_offsets[tp] for tp in partitions if tp in self.committed_offsets}

    def rewind(self, starts: dict[tuple[str, int], int]) -> None:
        self.rewound = dict(starts)


class FakeDelivery:
    """Delivery as the worker's loop sees it: no recovery due, no replay, ``commits`` and
    ``pending`` as the test sets them; what the loop tells it goes to ``log``."""

    recovery_required = False
    replaying = False

    def __init__(self, log: list[Any] | None = None) -> None:
        self.log: list[Any] = [] if log is None else log
        self.commits = 0
        self.pending = False

    def attach(self, consumer: object) -> None:
        pass

    def live(self, batch: PolledBatch) -> None:
        return None

    def store(self, offsets: dict[tuple[str, int], int]) -> None:
        self.log.append(("store", dict(offsets)))

    def commit_if_due(self) -> None:
        self.log.append("commit_if_due")


class FakeStateStore:
    """The exactly-once state store: what is written is kept in ``snapshots`` (a cursor goes
    to the producer's ``log``); a read gives back ``restored``."""

    def __init__(self, restored: Restored | None = None) -> None:
        self.restored = restored if restored is not None else Restored(None, None)
        self.snapshots: list[tuple[int, bytes, dict[tuple[str, int], int]]] = []

    def read(self) -> Restored:
        return self.restored

    def write(self, producer: Any, seq: int, blob: bytes, offsets: dict) -> None:
        self.snapshots.append((seq, blob, offsets))

    def write_cursor(self, producer: Any, cursor: bytes) -> None:
        producer.log.append(("cursor", cursor))
