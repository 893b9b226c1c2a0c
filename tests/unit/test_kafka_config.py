"""Client configurations: the defaults latency and memory rest on, and the passthrough."""

from __future__ import annotations

import logging

import pytest
from confluent_kafka import Consumer

from streamapp.kafka.config import (
    PREFETCH_KBYTES,
    consumer_config,
    producer_config,
    transactional_producer_config,
)
from streamapp.settings import Settings


def test_output_producers_send_a_batch_without_lingering() -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "localhost:9092"}, delivery={"instance_id": "w1"}
    )
    assert producer_config(settings)["linger.ms"] == 0
    assert transactional_producer_config(settings)["linger.ms"] == 0


def test_the_passthrough_still_sets_linger() -> None:
    settings = Settings(
        kafka={"bootstrap_servers": "localhost:9092", "properties": {"linger.ms": "5"}}
    )
    assert producer_config(settings)["linger.ms"] == "5"


def test_consumers_prefetch_a_bounded_queue_and_refill_it_soon() -> None:
    # librdkafka's defaults: 64 MB per partition, refilled 1 s after the queue was full
    consumer = consumer_config(Settings(kafka={"bootstrap_servers": "localhost:9092"}))
    assert consumer["queued.max.messages.kbytes"] == PREFETCH_KBYTES <= 4096
    assert consumer["fetch.queue.backoff.ms"] <= 10


def test_the_passthrough_still_sets_the_prefetch() -> None:
    settings = Settings(
        bootstrap_servers="localhost:9092", kafka={"queued.max.messages.kbytes": "65536"}
    )
    assert consumer_config(settings)["queued.max.messages.kbytes"] == "65536"
    assert "queued.max.messages.kbytes" not in producer_config(settings)


def test_the_consumer_group_protocol_drops_what_the_broker_decides(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """librdkafka refuses session.timeout.ms & co. under group.protocol=consumer (it used to
    crash the worker at start): the default goes quietly, the user's with a warning."""
    settings = Settings(
        kafka={
            "bootstrap_servers": "localhost:9092",
            "properties": {"group.protocol": "consumer", "session.timeout.ms": "6000"},
        }
    )
    with caplog.at_level(logging.WARNING, logger="streamapp.kafka.config"):
        consumer = consumer_config(settings)
    assert consumer["group.protocol"] == "consumer"
    assert not {"session.timeout.ms", "heartbeat.interval.ms"} & consumer.keys()
    # the broker's default (uniform) split features and feedback apart: labels met no events
    assert consumer["group.remote.assignor"] == "range"
    [warning] = caplog.messages
    assert "ignoring session.timeout.ms=6000" in warning
    Consumer(consumer).close()  # librdkafka accepts the configuration


def test_the_classic_protocol_keeps_the_session_timeout() -> None:
    settings = Settings(
        kafka={
            "bootstrap_servers": "localhost:9092",
            "properties": {"session.timeout.ms": "6000"},
        }
    )
    assert consumer_config(settings)["session.timeout.ms"] == "6000"
