"""Thin confluent-kafka wrappers: configs, consumer, producer, admin, local broker."""

from streamapp.kafka.admin import ensure_topics
from streamapp.kafka.config import admin_config, consumer_config, producer_config
from streamapp.kafka.consumer import BatchConsumer
from streamapp.kafka.local_broker import LocalBroker
from streamapp.kafka.producer import OutputProducer

__all__ = [
    "BatchConsumer",
    "LocalBroker",
    "OutputProducer",
    "admin_config",
    "consumer_config",
    "ensure_topics",
    "producer_config",
]
