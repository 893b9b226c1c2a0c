"""Hostile input through a real worker on the broker: every message is predicted or
dead-lettered exactly once, the valid neighbours are predicted, and the worker lives on."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable

import orjson
import pytest
from confluent_kafka import Producer

from streamapp.assembly import build_codec
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, read_topic
from tests.fakes import FakeMessage
from tests.unit.test_hostile_input import Hostile, corpus, random_inputs

pytestmark = pytest.mark.integration

N_FEATURES = 64  # the digits bundle
N_RANDOM = 300


def valid(i: int | str) -> Hostile:
    doc = {"event_id": f"v{i}", "features": [float(len(str(i)) % 16)] * N_FEATURES}
    return Hostile(f"valid {i}", "features", orjson.dumps(doc), None, key=f"v{i}".encode())


def produce(settings: Settings, inputs: list[Hostile]) -> None:
    # the 900 KB input plus its 100 KB-key neighbour: above the default limit with overhead;
    # idempotent, so a retried batch cannot land after a later one (the test maps offsets)
    producer = Producer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "message.max.bytes": 2_000_000,
            "enable.idempotence": True,
        }
    )
    topics = {"features": settings.topics.features, "feedback": settings.topics.feedback}
    for h in inputs:
        producer.produce(topics[h.kind], h.value, h.key, headers=list(h.headers) or None)
    assert producer.flush(30) == 0


def test_hostile_and_random_inputs_never_stop_the_worker(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(partitions=1)
    topics = settings.topics
    hostile = corpus(N_FEATURES) + list(random_inputs(N_RANDOM, N_FEATURES, seed=5))
    inputs: list[Hostile] = []
    for i, h in enumerate(hostile):
        inputs += [valid(i), h]
    produce(settings, inputs)

    with Worker(settings) as worker:
        worker.run(count=len(inputs), timeout=90)
        produce(settings, [valid("last")])  # alive: it still scores what comes after
        worker.run(count=1, timeout=30)
        stats = worker.pipeline.stats
        codec = build_codec(settings, worker.bundle)

    # where each input went: its offset on its topic (one partition each)
    at: dict[tuple[str, int], Hostile] = {}
    next_offset = Counter[str]()
    for h in [*inputs, valid("last")]:
        topic = topics.features if h.kind == "features" else topics.feedback
        at[(topic, next_offset[topic])] = h
        next_offset[topic] += 1

    dead = read_topic(settings, topics.dead_letter)
    dead_at = Counter((doc["source"]["topic"], doc["source"]["offset"]) for _, doc in dead)
    assert max(dead_at.values()) == 1  # no input dead-lettered twice
    for key, doc in dead:
        assert_valid("dead-letter", doc)
        h = at[(doc["source"]["topic"], doc["source"]["offset"])]
        assert h.reason is None or doc["error"]["type"] == h.reason, h.name
        assert doc["payload_size"] == len(h.value or b"")
        if h.value is not None:
            assert doc["payload_sha256"] == hashlib.sha256(h.value).hexdigest()
        assert len(orjson.dumps(doc)) + len(key or b"") < 1_000_000

    predictions = read_topic(settings, topics.predictions)
    predicted = Counter(doc["event_id"] for _, doc in predictions)
    assert max(predicted.values()) == 1  # no event predicted twice
    assert {f"v{i}" for i in range(len(hostile))} | {"vlast"} <= predicted.keys()

    # every feature input not dead-lettered was predicted, under the id the codec reads
    expected_ids = []
    for (topic, offset), h in at.items():
        if topic == topics.features and (topic, offset) not in dead_at:
            message = FakeMessage(topic, value=h.value, offset=offset, key=h.key)
            [event_id] = codec.decode_batch([message]).features.ids
            expected_ids.append(event_id)
    assert Counter(expected_ids) == predicted
    # and every label not dead-lettered was received
    n_feedback = next_offset[topics.feedback]
    dead_feedback = sum(1 for topic, _ in dead_at if topic == topics.feedback)
    assert stats.feedback_received + dead_feedback == n_feedback
    assert sum(1 for h in hostile if h.reason is not None) <= len(dead_at)
