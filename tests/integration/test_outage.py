"""A broker outage while events stream: the worker rides through it by itself and predicts
every acknowledged event (exactly once in exactly-once).

Each test runs its own broker (the session's kind: Apache Kafka where Java runs it), stops it
(SIGTERM or SIGKILL) while a producer streams, and restarts it on the same port and data:
shorter than the group session timeout (the worker keeps its partitions) and longer (the
group forgets the worker, whose partitions are lost and come back in a new generation).
"""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError, Message, Producer

from streamapp.kafka import ensure_topics
from streamapp.kafka.brokers import Broker, BrokerChoice
from streamapp.kafka.local_broker import free_port
from streamapp.worker import Worker
from tests.conftest import WorkerProcesses, fresh_settings, read_topic, wait_caught_up
from tests.integration.test_exactly_once import EOS, exactly_once, produce_scenario

pytestmark = [pytest.mark.integration, pytest.mark.slow]

EVENTS = 1_500


def _healthz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


class _Stream(threading.Thread):
    """~300 events/s, each with its own id; the producer retries through the outage and
    records which events the broker acknowledged."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)  # one whose broker never returns must not hold the exit
        self.bootstrap, self.topic = bootstrap, topic
        self.acknowledged: set[str] = set()

    def delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is None:
            self.acknowledged.add(msg.key().decode())

    def run(self) -> None:
        producer = Producer(
            {
                "bootstrap.servers": self.bootstrap,
                "enable.idempotence": True,
                "message.timeout.ms": 180_000,
            }
        )
        for i in range(EVENTS):
            event_id = f"e{i}"
            value = orjson.dumps({"event_id": event_id, "features": [float(i % 16)] * 64})
            producer.produce(self.topic, value, event_id.encode(), on_delivery=self.delivered)
            producer.poll(0)
            time.sleep(0.003)  # the producer's pacing: the stream spans the outage
        producer.flush(180)


@pytest.mark.parametrize(
    ("signal_name", "down_s", "guarantee"),
    [
        ("sigterm", 4.0, "at-least-once"),
        ("sigkill", 4.0, "exactly-once"),
        ("sigkill", 12.0, "at-least-once"),  # past the session timeout: partitions lost
        ("sigkill", 12.0, "exactly-once"),
    ],
)
def test_the_worker_rides_through_a_broker_outage_and_predicts_every_acknowledged_event(
    tmp_path: Path,
    workers: WorkerProcesses,
    digits_bundle: Path,
    own_broker: Broker,
    broker_choice: BrokerChoice,
    signal_name: str,
    down_s: float,
    guarantee: str,
) -> None:
    http_port = free_port()
    settings = fresh_settings(
        own_broker.bootstrap_servers,
        digits_bundle,
        **{"delivery.processing_guarantee": guarantee, "delivery.instance_id": "w1"},
        http={"enabled": True, "host": "127.0.0.1", "port": http_port},
    )
    ensure_topics(settings, partitions=2)
    worker = workers.start(settings)
    workers.wait_for("worker", "assigned", timeout=60)
    producing = _Stream(own_broker.bootstrap_servers, settings.topics.features)
    producing.start()
    time.sleep(2.0)  # the scenario: the outage comes 2 s into the stream
    own_broker.stop(kill=signal_name == "sigkill")
    time.sleep(down_s)  # the scenario: the broker stays down this long
    own_broker.start()
    producing.join(timeout=240)
    assert not producing.is_alive(), "the test producer did not finish"

    if broker_choice.kind == "kafka":
        expected = producing.acknowledged  # the promise: every acknowledged input
        assert len(expected) == EVENTS  # an idempotent producer retries through the outage
    else:  # noida-db loses acknowledged records on a SIGKILL: what it kept
        expected = {doc["event_id"] for _, doc in read_topic(settings, settings.topics.features)}
        assert len(expected) > EVENTS // 2
    counts: Counter[str] = Counter()
    deadline = time.monotonic() + 120
    while not expected <= set(counts) and time.monotonic() < deadline:
        records = read_topic(settings, settings.topics.predictions, idle=2.0)
        counts = Counter(doc["event_id"] for _, doc in records)
    assert sorted(expected - set(counts)) == [], "events never predicted after the outage"
    if guarantee == "exactly-once":
        assert max(counts.values()) == 1, counts.most_common(3)
    dead = read_topic(settings, settings.topics.dead_letter, timeout=5, idle=1)
    assert dead == [], "a redelivered event is not bad input"
    assert worker.poll() is None, f"the worker must survive the outage:\n{workers.log()[-3000:]}"
    assert _healthz(http_port) == 200
    worker.terminate()
    assert worker.wait(timeout=60) == 0


def test_a_broker_killed_during_a_transaction_commit_loses_and_duplicates_nothing(
    digits_bundle: Path, own_broker: Broker
) -> None:
    """The broker dies between send_offsets_to_transaction and commit_transaction: the
    commit's outcome is unknown to the worker until the broker is back. It must neither
    exit nor publish twice: the in-doubt producer is replaced, and the replay fills in."""
    settings = fresh_settings(own_broker.bootstrap_servers, digits_bundle, **EOS)
    ensure_topics(settings, partitions=2)
    n = 3000
    produce_scenario(settings, n)
    commits = Counter[str]()
    restarted = threading.Event()

    def kill_on_the_second_commit(point: str) -> None:
        commits[point] += 1  # the first commits the backlog's first batches
        if commits[point] == 2:
            own_broker.stop(kill=True)
            threading.Timer(8.0, lambda: (own_broker.start(), restarted.set())).start()

    worker = Worker(settings, fault_hook=kill_on_the_second_commit)
    failures: list[BaseException] = []

    def run() -> None:
        try:
            worker.run(timeout=240)
        except BaseException as exc:  # the worker must ride through: asserted below
            failures.append(exc)

    running = threading.Thread(target=run)
    running.start()
    try:
        assert restarted.wait(timeout=120), "the fault never fired"
        wait_caught_up(settings, timeout=120)
    finally:
        worker.stop()
        running.join()
        worker.close()
    assert failures == [], "the worker's loop ended with an error"
    assert restarted.is_set(), "the fault never fired"
    counts = exactly_once(settings, n)
    assert max(counts.values()) == 1, counts.most_common(3)


def test_an_outage_past_the_limit_ends_the_worker_with_one_line(
    workers: WorkerProcesses, digits_bundle: Path, own_broker: Broker
) -> None:
    """The broker never comes back: the worker does not stall silently for ever, it exits
    non-zero with one line once ``broker_outage_limit_s`` has passed."""
    settings = fresh_settings(
        own_broker.bootstrap_servers, digits_bundle, **{"delivery.broker_outage_limit_s": 8.0}
    )
    ensure_topics(settings, partitions=1)
    worker = workers.start(settings)
    workers.wait_for("worker", "assigned", timeout=60)
    producing = _Stream(own_broker.bootstrap_servers, settings.topics.features)
    producing.start()
    workers.wait_for("worker", "drift report", timeout=60)  # it is working
    own_broker.stop(kill=True)
    assert worker.wait(timeout=120) == 2
    log = workers.log()
    assert "Traceback" not in log
    own = [line for line in log.splitlines() if " ERROR " in line and "librdkafka" not in line]
    assert len(own) == 1 and "the broker has been unreachable for" in own[0], own
    assert "delivery.broker_outage_limit_s=8" in own[0]
