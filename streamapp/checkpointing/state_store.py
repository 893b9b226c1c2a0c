"""Learning-state snapshots in a compacted Kafka topic, written inside the transaction that
commits the input offsets, so a snapshot and the offsets can never disagree.

A snapshot is split into chunks (keys ``<key>#<i>``) followed by a manifest (key ``<key>``)
with the snapshot's sequence number, chunk count, sha256 and the input offsets it reflects.
Between snapshots, a transaction whose outputs moved a cursor (the drift reports') writes it
under ``<key>@cursor``: a few bytes, read back with the snapshot.
Readers use ``read_committed``: records of an aborted transaction are never seen.
"""

from __future__ import annotations

import hashlib
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streamapp.errors import BrokerError
from streamapp.kafka.producer import OutputProducer

__all__ = ["Restored", "Snapshot", "StateStore"]

logger = logging.getLogger(__name__)

CHUNK_BYTES = 512 * 1024  # well under the default 1 MB message limit


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    blob: bytes
    offsets: dict[tuple[str, int], int]


@dataclass(frozen=True, slots=True)
class Restored:
    """What a restore reads: the newest snapshot and the newest cursor (each may be absent)."""

    snapshot: Snapshot | None
    cursor: bytes | None


class StateStore:
    """Writes and finds the latest snapshot for ``key`` in ``topic``."""

    def __init__(self, topic: str, key: str, consumer_config: dict[str, Any]) -> None:
        self.topic = topic
        self.key = key
        self._consumer_config = consumer_config

    def write(
        self, producer: OutputProducer, seq: int, blob: bytes, offsets: dict[tuple[str, int], int]
    ) -> None:
        """Produce one snapshot (inside the caller's open transaction)."""
        chunks = [blob[i : i + CHUNK_BYTES] for i in range(0, len(blob), CHUNK_BYTES)] or [b""]
        for i, chunk in enumerate(chunks):
            producer.produce(self.topic, seq.to_bytes(8, "big") + chunk, f"{self.key}#{i}".encode())
        manifest = {
            "seq": seq,
            "chunks": len(chunks),
            "sha256": hashlib.sha256(blob).hexdigest(),
            "offsets": [[t, p, o] for (t, p), o in sorted(offsets.items())],
        }
        producer.produce(self.topic, orjson.dumps(manifest), self.key.encode())

    def write_cursor(self, producer: OutputProducer, cursor: bytes) -> None:
        """Produce the cursor (inside the caller's open transaction)."""
        producer.produce(self.topic, cursor, self._cursor_key)

    @property
    def _cursor_key(self) -> bytes:
        return f"{self.key}@cursor".encode()

    def read_latest(self, timeout: float = 30.0) -> Snapshot | None:
        """The newest complete snapshot for ``key``, or ``None``."""
        return self.read(timeout).snapshot

    def read(self, timeout: float = 30.0) -> Restored:
        """The newest complete snapshot and the newest cursor for ``key``."""
        config = {
            **self._consumer_config,
            "group.id": f"{self.key}-restore-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
        config["enable.partition.eof"] = True  # the end of the topic ends the scan
        config.pop("group.instance.id", None)
        consumer = Consumer(config)
        try:
            metadata = consumer.list_topics(self.topic, timeout=timeout)
            partitions = metadata.topics[self.topic].partitions
            if metadata.topics[self.topic].error is not None:
                raise BrokerError(f"state topic {self.topic}: {metadata.topics[self.topic].error}")
            return self._scan(
                consumer, [TopicPartition(self.topic, p, 0) for p in partitions], timeout
            )
        finally:
            consumer.close()

    def _scan(
        self, consumer: Consumer, partitions: list[TopicPartition], timeout: float
    ) -> Restored:
        consumer.assign(partitions)
        chunks: dict[int, bytes] = {}
        latest: Snapshot | None = None
        cursor: bytes | None = None
        prefix = f"{self.key}#".encode()
        pending = {tp.partition for tp in partitions}
        deadline = time.monotonic() + timeout
        while pending:
            if time.monotonic() > deadline:
                raise BrokerError(f"reading state topic {self.topic} timed out")
            for msg in consumer.consume(500, 0.5):
                error = msg.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        pending.discard(msg.partition())
                    continue
                key = msg.key() or b""
                if key.startswith(prefix):
                    chunks[int(key[len(prefix) :])] = msg.value() or b""
                elif key == self.key.encode():
                    latest = self._assemble(orjson.loads(msg.value() or b"{}"), chunks) or latest
                elif key == self._cursor_key:
                    cursor = msg.value()
        return Restored(latest, cursor)

    def _assemble(self, manifest: dict[str, Any], chunks: dict[int, bytes]) -> Snapshot | None:
        seq = int(manifest["seq"])
        parts = [chunks.get(i, b"") for i in range(int(manifest["chunks"]))]
        if any(part[:8] != seq.to_bytes(8, "big") for part in parts):
            logger.warning("snapshot %s seq %d is incomplete; ignoring it", self.key, seq)
            return None
        blob = b"".join(part[8:] for part in parts)
        if hashlib.sha256(blob).hexdigest() != manifest["sha256"]:
            logger.warning("snapshot %s seq %d fails its checksum; ignoring it", self.key, seq)
            return None
        offsets = {(t, int(p)): int(o) for t, p, o in manifest["offsets"]}
        return Snapshot(seq, blob, offsets)
