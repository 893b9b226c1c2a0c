"""Topic creation and checks."""

from __future__ import annotations

import logging

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streamapp.errors import BrokerError
from streamapp.kafka.config import admin_config
from streamapp.settings import Settings

__all__ = ["BrokerProbe", "ensure_topics", "partition_counts"]

logger = logging.getLogger(__name__)


def ensure_topics(
    settings: Settings, partitions: int = 1, replication_factor: int = 1, timeout: float = 30.0
) -> None:
    """Create the worker's topics if missing. ``features`` and ``feedback`` get the same
    partition count, so a label lands in the same partition number as its event."""
    admin = AdminClient(admin_config(settings))
    topics = settings.topics
    wanted = [NewTopic(name, partitions, replication_factor) for name in topics.inputs()]
    outputs = [*topics.outputs(), topics.shadow_predictions]
    wanted += [NewTopic(name, partitions, replication_factor) for name in outputs]
    # learning-state snapshots: compacted, the latest per key is all that matters
    wanted.append(
        NewTopic(topics.state, 1, replication_factor, config={"cleanup.policy": "compact"})
    )
    # model lifecycle events: one partition, so every worker sees them in one order
    wanted.append(NewTopic(topics.model_control, 1, replication_factor))
    # one learner reads every example in one order; the latest head per model is kept
    wanted.append(NewTopic(topics.training_examples, 1, replication_factor))
    wanted.append(
        NewTopic(topics.model_updates, 1, replication_factor, config={"cleanup.policy": "compact"})
    )
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc


class BrokerProbe:
    """Answers "is the broker reachable?" for ``/readyz`` with a client of its own: calls into
    the worker's consumer from another thread can wait on a rebalance for seconds."""

    def __init__(self, settings: Settings) -> None:
        self._admin = AdminClient(admin_config(settings))

    def reachable(self, timeout: float = 2.0) -> bool:
        try:
            self._admin.list_topics(timeout=timeout)
        except KafkaException:
            return False
        return True


def partition_counts(settings: Settings, names: list[str], timeout: float = 10.0) -> dict[str, int]:
    """Partition count of each existing topic in ``names``."""
    admin = AdminClient(admin_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach {settings.bootstrap_servers}: {exc}") from exc
    return {
        name: len(metadata.topics[name].partitions)
        for name in names
        if name in metadata.topics and metadata.topics[name].error is None
    }
