"""Which broker the tests and benchmarks start, and the Apache Kafka node's settings."""

from __future__ import annotations

from pathlib import Path

import pytest

import streamapp.kafka.brokers as brokers
from streamapp.errors import BrokerError
from streamapp.kafka.apache import KAFKA_VERSION, POM, ApacheKafka, _Node
from streamapp.kafka.brokers import choose_broker


@pytest.fixture
def no_java(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(brokers, "java_missing", lambda: "no java on PATH (nor JAVA_HOME)")


@pytest.fixture
def java_but_no_maven(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(brokers, "java_missing", lambda: None)
    monkeypatch.setattr(brokers.shutil, "which", lambda name: None)
    monkeypatch.setattr(brokers, "DEFAULT_HOME", tmp_path)  # no cached jars


def test_apache_kafka_where_java_and_maven_are() -> None:
    choice = choose_broker({})
    if brokers.java_missing() is None:
        assert (choice.kind, choice.why) == ("kafka", f"tests run on Apache Kafka {KAFKA_VERSION}")


@pytest.mark.usefixtures("no_java")
def test_without_java_one_line_says_why_and_noida_db_stands_in() -> None:
    choice = choose_broker({})
    assert choice.kind == "noida"
    assert choice.why == "no java on PATH (nor JAVA_HOME): tests run on noida-db instead of " + (
        "Apache Kafka"
    )


@pytest.mark.usefixtures("no_java")
def test_under_ci_a_missing_java_fails_instead_of_falling_back() -> None:
    with pytest.raises(BrokerError, match="cannot run here: no java"):
        choose_broker({"CI": "true"})


@pytest.mark.usefixtures("java_but_no_maven")
def test_without_maven_and_cached_jars_kafka_cannot_start() -> None:
    assert choose_broker({}).kind == "noida"
    with pytest.raises(BrokerError, match="no mvn"):
        choose_broker({"STREAMAPP_TEST_BROKER": "kafka"})


@pytest.mark.usefixtures("no_java")
def test_noida_db_on_request_even_under_ci() -> None:
    assert choose_broker({"CI": "true", "STREAMAPP_TEST_BROKER": "noida"}).kind == "noida"


def test_an_unknown_broker_name_is_refused() -> None:
    with pytest.raises(BrokerError, match="expected 'kafka' or 'noida'"):
        choose_broker({"STREAMAPP_TEST_BROKER": "redpanda"})


def _properties(kafka: ApacheKafka, node: _Node, cluster: list[_Node]) -> dict[str, str]:
    lines = kafka.server_properties(node, cluster).splitlines()
    return dict(line.split("=", 1) for line in lines)


def test_one_node_has_replication_factor_one_and_quick_groups(tmp_path: Path) -> None:
    kafka = ApacheKafka(data_dir=tmp_path)
    node = _Node(1, 9092, 9093, tmp_path)
    props = _properties(kafka, node, [node])
    assert props["process.roles"] == "broker,controller"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:9093"
    assert props["offsets.topic.replication.factor"] == "1"
    assert props["transaction.state.log.min.isr"] == "1"
    assert props["group.initial.rebalance.delay.ms"] == "0"
    assert int(props["group.consumer.min.session.timeout.ms"]) <= 6000


def test_three_nodes_replicate_three_times_with_two_in_sync(tmp_path: Path) -> None:
    kafka = ApacheKafka(data_dir=tmp_path, nodes=3, properties={"num.io.threads": "2"})
    nodes = [_Node(i, 9000 + i, 9100 + i, tmp_path / str(i)) for i in (1, 2, 3)]
    props = _properties(kafka, nodes[1], nodes)
    assert props["node.id"] == "2"
    assert props["controller.quorum.voters"].count("@127.0.0.1:") == 3
    assert props["default.replication.factor"] == "3"
    assert props["min.insync.replicas"] == "2"
    assert props["transaction.state.log.replication.factor"] == "3"
    assert props["num.io.threads"] == "2"  # the caller's properties win


def test_the_pom_pins_the_version_the_helper_names() -> None:
    """One version for the tests, the benchmarks and docker-compose (its own test)."""
    from xml.etree import ElementTree

    namespace = {"m": "http://maven.apache.org/POM/4.0.0"}
    root = ElementTree.parse(POM).getroot()
    assert root.findtext("m:properties/m:kafka.version", namespaces=namespace) == KAFKA_VERSION
