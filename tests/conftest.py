"""Shared fixtures: a trained source bundle, a real broker, topic factories, schema checks."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import jsonschema
import numpy as np
import orjson
import pytest
from confluent_kafka import Consumer, KafkaException, Producer

from streamapp.kafka import ensure_topics
from streamapp.kafka.brokers import EXTERNAL_ENV, Broker, BrokerChoice, choose_broker, start_broker
from streamapp.model.training import train_source_bundle
from streamapp.scenarios import get_scenario
from streamapp.schemas import load_schema
from streamapp.settings import (
    DeliverySettings,
    HttpSettings,
    KafkaSettings,
    ModelSettings,
    Settings,
    TopicNames,
)
from streamapp.worker import Worker

EXTERNAL_BROKER_ENV = EXTERNAL_ENV


@pytest.fixture(scope="session")
def digits_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The digits-shift source model, trained once per session."""
    path = tmp_path_factory.mktemp("models") / "digits-shift" / "1"
    train_source_bundle(get_scenario("digits-shift"), path)
    return path


@pytest.fixture(scope="session")
def friedman_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The friedman-shift regression source model, trained once per session (15 epochs)."""
    path = tmp_path_factory.mktemp("models") / "friedman-shift" / "1"
    train_source_bundle(get_scenario("friedman-shift"), path, epochs=15)
    return path


def pytest_report_header() -> str:
    external = os.environ.get(EXTERNAL_BROKER_ENV)
    return f"broker: external {external}" if external else f"broker: {choose_broker().why}"


@pytest.fixture(scope="session")
def broker_choice() -> BrokerChoice:
    """Apache Kafka where Java runs it, else noida-db (see :mod:`streamapp.kafka.brokers`)."""
    return choose_broker()


@pytest.fixture(scope="session")
def bootstrap_servers(
    tmp_path_factory: pytest.TempPathFactory, broker_choice: BrokerChoice
) -> Iterator[str]:
    """A real broker: ``$STREAMAPP_TEST_BOOTSTRAP``, or one the session starts."""
    external = os.environ.get(EXTERNAL_BROKER_ENV)
    if external:
        yield external
        return
    broker = start_broker(broker_choice.kind, tmp_path_factory.mktemp("broker"))
    try:
        yield broker.bootstrap_servers
    finally:
        broker.close()


@pytest.fixture(params=["classic", "consumer"])
def group_protocol(request: pytest.FixtureRequest, broker_choice: BrokerChoice) -> dict[str, str]:
    """Both consumer group protocols (KIP-848's ``consumer`` needs Apache Kafka 4), as the
    ``kafka`` passthrough of the tests' settings; under ``consumer`` the worker drops the
    session timeout (the broker's ``group.consumer.session.timeout.ms`` rules)."""
    external = os.environ.get(EXTERNAL_BROKER_ENV)
    if request.param == "consumer" and broker_choice.kind == "noida" and not external:
        pytest.skip("noida-db has no KIP-848 consumer groups")
    return {"session.timeout.ms": "6000", "group.protocol": request.param}


@pytest.fixture
def own_broker(tmp_path: Path, broker_choice: BrokerChoice) -> Iterator[Broker]:
    """A broker of this test's own (of the session's kind), to stop and restart: ``stop``
    then ``start`` brings it back on the same port and data."""
    broker = start_broker(broker_choice.kind, tmp_path / "broker")
    try:
        yield broker
    finally:
        broker.close()


def fresh_settings(bootstrap_servers: str, bundle: Path, **overrides: object) -> Settings:
    """Settings on uniquely named topics (not created) and a fresh group, for ``bundle`` on
    the broker at ``bootstrap_servers``; ``overrides`` as :meth:`Settings.with_overrides`."""
    suffix = uuid.uuid4().hex[:8]
    topics = {name: f"{name.replace('_', '-')}-{suffix}" for name in TopicNames.model_fields}
    return Settings(
        kafka=KafkaSettings(
            bootstrap_servers=bootstrap_servers,
            group_id=f"group-{suffix}",
            properties={"session.timeout.ms": "6000"},
        ),
        delivery=DeliverySettings(commit_interval_ms=200),
        model=ModelSettings(bundle=bundle),
        topics=TopicNames(**topics),
        http=HttpSettings(enabled=False),  # tests that want the endpoints turn them on
    ).with_overrides(**overrides)


@pytest.fixture
def make_settings(bootstrap_servers: str, digits_bundle: Path) -> Callable[..., Settings]:
    """Settings on fresh, uniquely named topics (created) and a fresh group."""

    def factory(partitions: int = 1, **overrides: object) -> Settings:
        bundle = Path(str(overrides.pop("bundle", digits_bundle)))
        settings = fresh_settings(bootstrap_servers, bundle, **overrides)
        ensure_topics(settings, partitions=partitions)
        return settings

    return factory


def read_topic(
    settings: Settings,
    topic: str,
    expected: int | None = None,
    timeout: float = 30.0,
    idle: float = 3.0,
) -> list[tuple[bytes | None, dict]]:
    """Every committed record of ``topic`` from the beginning: until ``expected`` are read,
    or nothing new arrived for ``idle`` seconds, or ``timeout``."""
    security = {
        k: v
        for k, v in settings.kafka.properties.items()
        if k.startswith(("security.", "sasl.", "ssl."))
    }
    consumer = Consumer(
        {
            **security,
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": f"reader-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    out: list[tuple[bytes | None, dict]] = []
    deadline = time.monotonic() + timeout
    last_new = time.monotonic()
    try:
        while time.monotonic() < deadline:
            if expected is not None and len(out) >= expected:
                break
            if expected is None and out and time.monotonic() - last_new > idle:
                break
            for msg in consumer.consume(1000, 0.5):
                if msg.error() is None:
                    out.append((msg.key(), orjson.loads(msg.value())))
                    last_new = time.monotonic()
    finally:
        consumer.close()
    return out


def produce_raw(settings: Settings, records: list[tuple[str, bytes | None, bytes]]) -> None:
    """Produce ``(topic, key, value)`` as they are."""
    # idempotent: a retried batch cannot land after a later one, so offsets follow the list
    producer = Producer(
        {"bootstrap.servers": settings.kafka.bootstrap_servers, "enable.idempotence": True}
    )
    for topic, key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def wait_caught_up(settings: Settings, timeout: float = 120) -> None:
    """Until the worker group has committed every input partition up to its end."""
    from confluent_kafka import TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka.bootstrap_servers,
            "group.id": settings.kafka.group_id,
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in settings.topics.inputs()
            for p in consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ]
        committed: dict[tuple[str, int], int] = {}
        ends: dict[tuple[str, int], int] = {}

        def caught_up() -> bool:
            nonlocal committed, ends
            try:
                committed = {
                    (tp.topic, tp.partition): tp.offset
                    for tp in consumer.committed(partitions, timeout=10)
                }
                ends = {
                    (tp.topic, tp.partition): consumer.get_watermark_offsets(tp, timeout=10)[1]
                    for tp in partitions
                }
            except KafkaException:  # e.g. a leader moving after a broker fault: ask again
                ends = {}
            return bool(ends) and all(committed[tp] >= end for tp, end in ends.items())

        wait_until(
            caught_up,
            lambda: f"group {settings.kafka.group_id} not caught up: {committed} < {ends}",
            timeout,
            interval=0.5,
        )
    finally:
        consumer.close()


def settings_env(settings: Settings) -> dict[str, str]:
    """``settings`` as STREAMAPP_* environment variables, for a worker subprocess."""
    return settings.subprocess_env()


class WorkerProcesses:
    """``streamapp run`` subprocesses with their logs; whatever still runs is killed at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.started: list[subprocess.Popen[bytes]] = []

    def start(
        self, settings: Settings, name: str = "worker", runtime: str = "confluent"
    ) -> subprocess.Popen[bytes]:
        command = [sys.executable, "-m", "streamapp", "--log-level", "INFO", "run"]
        with (self.log_dir / f"{name}.log").open("ab") as log:
            process = subprocess.Popen(
                [*command, "--runtime", runtime],
                env=settings_env(settings),
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.log_dir,  # where Faust keeps its data directory
            )
        self.started.append(process)
        return process

    def log(self, name: str = "worker") -> str:
        path = self.log_dir / f"{name}.log"
        return path.read_text() if path.exists() else ""

    def wait_for(self, name: str, text: str, count: int = 1, timeout: float = 60) -> None:
        """Until ``name``'s log holds ``text`` ``count`` times."""
        wait_until(
            lambda: self.log(name).count(text) >= count,
            lambda: f"{name} never logged {text!r}:\n{self.log(name)[-3000:]}",
            timeout,
            interval=0.1,
        )

    def close(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(tmp_path)
    yield processes
    processes.close()
    for log in sorted(tmp_path.glob("*.log")):  # shown by pytest when a test fails
        sys.stderr.write(f"--- {log.name}\n{log.read_text()[-4000:]}")


def state_leaves(state: object, path: str = "") -> dict[str, object]:
    """Every leaf of a nested learning state (arrays and scalars), by its path."""
    if isinstance(state, dict):
        out: dict[str, object] = {}
        for key, value in state.items():
            out.update(state_leaves(value, f"{path}/{key}"))
        return out
    return {path: state}


def state_arrays(state: object) -> dict[str, np.ndarray]:
    """The array leaves of a nested learning state, by their path."""
    return {k: v for k, v in state_leaves(state).items() if isinstance(v, np.ndarray)}


def assert_valid(schema_name: str, document: object) -> None:
    """Validate with the reference implementation (not the worker's compiled validator)."""
    jsonschema.Draft202012Validator(load_schema(schema_name)).validate(document)


def wait_until(
    condition: Callable[[], bool],
    what: str | Callable[[], str],
    timeout: float = 30,
    interval: float = 0.05,
) -> None:
    """Poll ``condition`` every ``interval`` seconds until it holds; fail with ``what`` after
    ``timeout`` seconds (a callable ``what`` is asked then, e.g. for a log's last lines)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(what() if callable(what) else what)
        time.sleep(interval)  # the poll interval: nothing to wait on but the condition


def second_has_not_joined(second: Worker) -> None:
    """An ``on_batch`` hook for a first worker: ~330 events/s (batches of 100) until the
    ``second`` has scored something, so the backlog is not gone before it joins."""
    if second.pipeline.stats.events_scored == 0:
        time.sleep(0.3)  # the pacing is the point: the first worker is slowed down on purpose
