"""Fakes the unit tests share: a clock moved by hand and a Kafka message.

``FakeClock`` stands in for ``time.monotonic`` wherever the code under test takes a
``clock`` argument: the test sets ``clock.now`` (or calls ``advance``) instead of sleeping.

``FakeMessage`` has the parts of ``confluent_kafka.Message`` the code reads: where it is
(topic, partition, offset), what it carries (value, key, headers), when (timestamp) and an
error, for the events librdkafka hands out as messages (partition EOF, fatal errors).
"""

from __future__ import annotations

from confluent_kafka import TIMESTAMP_CREATE_TIME, KafkaError

__all__ = ["DEFAULT_TIMESTAMP_MS", "FakeClock", "FakeMessage"]

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
