"""Leader loss in a three-broker cluster (RF 3, ``min.insync.replicas=2``): an exactly-once
worker streams with labels while the test SIGKILLs, one after the other, the leader of an
input partition, the leader of an output partition and the transaction coordinator's
broker, each restarted a few seconds later. Nothing is lost, nothing duplicated in
``read_committed``, and the learning state equals an uninterrupted run's.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient

from streamapp.kafka import ensure_topics
from streamapp.kafka.apache import ApacheKafka
from streamapp.kafka.brokers import BrokerChoice
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from tests.conftest import WorkerProcesses, fresh_settings, wait_caught_up, wait_until
from tests.integration.test_exactly_once import (
    EOS,
    assert_same_head,
    exactly_once,
    group_head,
    reference_head,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 4000  # with their labels: ~8,000 records over ~27 s


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    with ApacheKafka(data_dir=tmp_path_factory.mktemp("cluster"), nodes=3, heap_mb=384) as kafka:
        yield kafka


@pytest.fixture(autouse=True)
def _apache_kafka_only(broker_choice: BrokerChoice) -> None:
    if broker_choice.kind != "kafka":
        pytest.skip("a three-broker cluster needs Apache Kafka")


def leader(cluster: ApacheKafka, topic: str, partition: int = 0) -> int:
    admin = AdminClient({"bootstrap.servers": cluster.bootstrap_servers, "log_level": 0})
    return int(admin.list_topics(topic, timeout=10).topics[topic].partitions[partition].leader)


def committed_total(settings: Settings) -> int:
    """The worker group's committed input offsets, summed (0 while it has none)."""
    consumer = Consumer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "group.id": settings.kafka.group_id}
    )
    try:
        partitions = [TopicPartition(settings.topics.features, p) for p in (0, 1)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(partitions, timeout=10))
    except KafkaException:  # a coordinator moving: no progress seen this time
        return 0
    finally:
        consumer.close()


def wait_until_committed(settings: Settings, at_least: int) -> None:
    """Until the worker has committed ``at_least`` input events (while the stream runs on)."""
    wait_until(
        lambda: committed_total(settings) >= at_least,
        f"the worker never committed {at_least} events",
        90,
        interval=0.2,
    )


def kill_and_restart(cluster: ApacheKafka, find: Callable[[], int], down_s: float = 4.0) -> int:
    node = find()
    cluster.stop_node(node, kill=True)
    time.sleep(down_s)  # the scenario: the node stays down this long
    cluster.start_node(node)
    return node


def test_leader_and_coordinator_loss_loses_and_duplicates_nothing_same_learning_state(
    cluster: ApacheKafka, digits_bundle: Path, workers: WorkerProcesses
) -> None:
    # a partition whose leader died looks caught up, and its producer's retries land on the
    # new leader seconds later: the strict event-time merge waits for them (up to 30 s), so
    # the order, and the learning, are an uninterrupted run's
    failover_order = {"batch.align_strict": True, "batch.align_max_idle_ms": 30_000}
    settings = fresh_settings(cluster.bootstrap_servers, digits_bundle, **{**EOS, **failover_order})
    ensure_topics(settings, partitions=2, replication_factor=3)
    records = list(
        stream(get_scenario("digits-shift"), EVENTS, rate=150, label_delay_s=0.5, seed=5)
    )
    producing = threading.Thread(
        target=produce_records, args=(settings, records), kwargs={"realtime": True}
    )
    producing.start()
    worker = workers.start(settings)
    workers.wait_for("worker", "assigned", timeout=90)
    killed = []
    try:
        # at a quarter, a half and three quarters of the stream: every kill lands mid-stream
        for quarter, topic in enumerate(
            (
                settings.topics.features,
                settings.topics.predictions,
                "__transaction_state",  # one partition: its leader coordinates every transaction
            ),
            start=1,
        ):
            wait_until_committed(settings, EVENTS * quarter // 4)
            killed.append(kill_and_restart(cluster, lambda topic=topic: leader(cluster, topic)))
    finally:
        producing.join(timeout=120)
    assert not producing.is_alive(), "the test producer did not finish"
    print(f"killed and restarted nodes {killed}")

    wait_caught_up(settings, timeout=180)
    counts = exactly_once(settings, EVENTS, timeout=120)
    assert max(counts.values()) == 1, counts.most_common(3)
    assert worker.poll() is None, workers.log()[-3000:]
    worker.terminate()
    assert worker.wait(timeout=60) == 0
    assert_same_head(group_head(settings), reference_head(settings, len(records)))
