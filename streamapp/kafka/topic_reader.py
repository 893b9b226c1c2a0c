"""Read a whole topic, from the beginning to its end offsets when called, outside any group."""

from __future__ import annotations

import logging
import time

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from streamapp.errors import ConfigError
from streamapp.kafka.config import reader_config
from streamapp.settings import Settings

__all__ = ["read_to_end"]

logger = logging.getLogger(__name__)


def read_to_end(
    settings: Settings, topic: str, purpose: str, timeout: float = 30.0
) -> list[Message]:
    """Every message of every partition of ``topic`` up to the end it had when called.

    A partition is done when the consumer's position reaches that end, so a transaction
    marker or a compacted tail at the end never makes it wait out ``timeout``.
    """
    consumer = Consumer(reader_config(settings, purpose))
    try:
        metadata = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if metadata is None or metadata.error is not None:
            raise ConfigError(f"cannot read topic {topic!r}: {metadata and metadata.error}")
        ends = {}
        for partition in metadata.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), 10)
            if high > low:
                ends[partition] = high
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in ends])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while ends and time.monotonic() < deadline:
            messages += [m for m in consumer.consume(500, 0.5) if m.error() is None]
            for tp in consumer.position([TopicPartition(topic, p) for p in ends]):
                if tp.offset >= ends[tp.partition]:
                    del ends[tp.partition]
        if ends:
            logger.warning("%s: read timed out short of the end of partitions %s", topic, ends)
        return messages
    finally:
        consumer.close()
