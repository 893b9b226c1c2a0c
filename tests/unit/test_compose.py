"""docker-compose.yml cannot run here (no Docker engine); check that it is coherent."""

from __future__ import annotations

from pathlib import Path

import yaml

from streamapp.cli import build_parser
from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_kraft_kafka_topics_model_worker_and_producer() -> None:
    services = load()["services"]
    assert set(services) == {"kafka", "topics", "model", "worker", "producer"}
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert "controller" in kafka["environment"]["KAFKA_PROCESS_ROLES"]  # KRaft, no ZooKeeper
    assert "kafka-topics.sh" in services["topics"]["command"][0]
    for name in ("worker", "producer"):
        depends = services[name]["depends_on"]
        assert depends["topics"]["condition"] == "service_completed_successfully"


def test_worker_and_producer_commands_parse_with_the_real_cli() -> None:
    services = load()["services"]
    parser = build_parser()
    assert parser.parse_args(services["worker"]["command"]).command == "run"
    produce = parser.parse_args(services["producer"]["command"])
    assert produce.command == "produce" and produce.realtime
    train = services["model"]["command"][0].split("|| ")[1].split()
    assert parser.parse_args(train[1:]).command == "train-source"


def test_environment_names_are_real_settings(monkeypatch) -> None:
    worker_env = load()["services"]["worker"]["environment"]
    for key, value in worker_env.items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.bootstrap_servers == "kafka:9092"
    assert str(settings.bundle) == "/models/digits-shift/1"


def test_the_topics_created_are_the_default_topic_names() -> None:
    script = load()["services"]["topics"]["command"][0]
    names = Settings().topics
    for topic in names.inputs() + names.outputs():
        assert topic in script
