"""docker-compose.yml cannot run here (no Docker engine); check that it is coherent."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streamapp.assembly import build_pipeline
from streamapp.cli import build_parser
from streamapp.kafka.apache import KAFKA_VERSION
from streamapp.kafka.schema_registry import APICURIO_VERSION
from streamapp.model.bundle import load_bundle
from streamapp.ops.metrics import WorkerMetrics
from streamapp.regression.pipeline import RegressionPipeline
from streamapp.settings import Settings

ROOT = Path(__file__).resolve().parents[2]


def load() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_compose_has_kraft_kafka_topics_model_worker_producer_and_monitoring() -> None:
    services = load()["services"]
    assert set(services) == {
        "kafka",
        "topics",
        "model",
        "worker",
        "producer",
        "prometheus",
        "grafana",
        "scorer",
        "learner",
        "registry",
    }
    kafka = services["kafka"]
    # the version the tests and benchmarks run (streamapp/kafka/runtime/pom.xml)
    assert kafka["image"] == f"apache/kafka:{KAFKA_VERSION}"
    assert services["topics"]["image"] == kafka["image"]
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
    assert settings.kafka.bootstrap_servers == "kafka:9092"
    assert str(settings.model.bundle) == "/models/digits-shift/1"


def test_the_topics_created_are_the_default_topic_names() -> None:
    script = load()["services"]["topics"]["command"][0]
    names = Settings().topics
    for topic in [*names.inputs(), *names.outputs()]:
        assert topic in script
    for topic in (names.training_examples, names.model_updates, names.model_control):
        assert topic in script
    assert "--topic model-updates --partitions 1" in script and "cleanup.policy=compact" in script


def test_the_scale_out_profile_runs_two_scorers_and_a_learner(monkeypatch) -> None:
    services = load()["services"]
    scorer, learner = services["scorer"], services["learner"]
    assert scorer["profiles"] == learner["profiles"] == ["scale-out"]
    assert scorer["deploy"]["replicas"] == 2
    roles = []
    for service in (scorer, learner):
        for key, value in service["environment"].items():
            monkeypatch.setenv(key, str(value))
        roles.append(Settings().role)
    assert roles == ["scorer", "learner"]
    assert (
        scorer["environment"]["STREAMAPP_KAFKA__GROUP_ID"]
        == learner["environment"]["STREAMAPP_KAFKA__GROUP_ID"]
    )


def test_prometheus_scrapes_the_workers_metrics_port() -> None:
    services = load()["services"]
    worker_env = services["worker"]["environment"]
    port = int(worker_env["STREAMAPP_HTTP__PORT"])
    assert f"{port}:{port}" in services["worker"]["ports"]
    mount = services["prometheus"]["volumes"][0].split(":")
    config = yaml.safe_load((ROOT / mount[0]).read_text())
    assert mount[1] == "/etc/prometheus/prometheus.yml"
    [job] = config["scrape_configs"]
    assert job["metrics_path"] == "/metrics"
    assert job["static_configs"][0]["targets"] == [f"worker:{port}"]


def _grafana_mounts() -> dict[str, Path]:
    volumes = load()["services"]["grafana"]["volumes"]
    return {inside: ROOT / outside for outside, inside, _ in (v.split(":") for v in volumes)}


def test_grafana_provisions_the_prometheus_datasource_and_the_dashboard() -> None:
    mounts = _grafana_mounts()
    provisioning = mounts["/etc/grafana/provisioning"]
    [datasource] = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert datasource["type"] == "prometheus"
    assert datasource["url"] == "http://prometheus:9090"
    [provider] = yaml.safe_load((provisioning / "dashboards" / "streamapp.yml").read_text())[
        "providers"
    ]
    dashboards = mounts[provider["options"]["path"]]
    dashboard = json.loads((dashboards / "streamapp.json").read_text())
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("throughput", "lag", "latency", "accuracy", "drift"):
        assert topic in titles
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == datasource["uid"]
        assert panel["targets"] and all(t["expr"] for t in panel["targets"])


def test_every_metric_the_dashboard_queries_is_one_the_worker_exports(
    digits_bundle: Path, friedman_bundle: Path
) -> None:
    # a classifier's, and a regression model's (its panel: MAE, RMSE, residual)
    exported = exported_metric_names(digits_bundle) | exported_metric_names(friedman_bundle)
    dashboard = json.loads((ROOT / "deploy/grafana/dashboards/streamapp.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:streamapp|process|python)_[a-z0-9_]+", target["expr"])
    }
    assert queried and queried <= exported, queried - exported
    assert {"streamapp_ledger_events_total", "process_resident_memory_bytes"} <= queried


def exported_metric_names(bundle_path: Path) -> set[str]:
    """Sample names a worker exports once it has checkpointed and published a drift report."""
    settings = Settings(
        model={"bundle": bundle_path}, delivery={"processing_guarantee": "exactly-once"}
    )
    pipeline = build_pipeline(settings, load_bundle(bundle_path))
    if isinstance(pipeline, RegressionPipeline):  # a target, the value served, the source's
        pipeline.monitor.update_labels(np.ones(1), np.full((1, 1), 1.5), np.ones(1), np.ones(1))
    else:
        pipeline.monitor.update_labels(
            np.array([1]), np.full((1, 10), 0.1), np.array([1]), np.ones(1)
        )

    class Source:
        messages = recoveries = 0

        def __init__(self) -> None:
            self.pipeline = pipeline

        def model_info(self) -> dict[str, str]:
            return {"name": "m", "version": "1"}

        def consumer_lag(self) -> dict[tuple[str, int], int]:
            return {("features", 0): 0}

        def event_counts(self) -> dict[str, float]:
            return {"commits": 1, "transaction_aborts": 0}

        def last_drift_report(self) -> dict[str, object]:
            return pipeline.report(time.time())

    families = text_string_to_metric_families(WorkerMetrics(Source()).render().decode())
    return {sample.name for family in families for sample in family.samples}


def test_the_registry_is_the_version_the_tests_build_and_the_stack_speaks_avro(
    monkeypatch,
) -> None:
    services = load()["services"]
    assert services["registry"]["image"] == f"apicurio/apicurio-registry-mem:{APICURIO_VERSION}"
    for key, value in services["worker"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    registry = Settings().schema_registry
    assert registry.url is not None and registry.url.startswith("http://registry:8080/")
    assert (registry.features_format, registry.output_format) == ("avro", "avro")
    produce = build_parser().parse_args(services["producer"]["command"])
    assert produce.format == "avro"
