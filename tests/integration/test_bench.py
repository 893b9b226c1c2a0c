"""The benchmarks run end to end on small inputs (numbers are measurements, not asserted)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
import torch

from streamapp.bench import SUITES, run_bench
from streamapp.bench.loops import peers_python
from streamapp.kafka.admin import partition_counts
from streamapp.kafka.apache import KAFKA_VERSION
from streamapp.kafka.brokers import BrokerChoice, BrokerKind, configured_or_started
from streamapp.kafka.schema_registry import ApicurioRegistry
from streamapp.settings import Settings

pytestmark = pytest.mark.integration


def test_every_suite_runs_and_writes_json_and_markdown(
    bootstrap_servers: str,
    digits_bundle: Path,
    schema_registry: ApicurioRegistry,
    tmp_path: Path,
) -> None:
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        bundle=digits_bundle,
        kafka={"session.timeout.ms": "6000"},
        ledger={"max_entries": 500},
        schema_registry={"url": schema_registry.url},  # the formats suite's: the session's
    )
    result = run_bench(
        settings,
        SUITES,
        events=400,
        loads=(200,),
        latency_seconds=3.0,
        memory_events=3000,
        repeat=1,
        heavy_events=200,
        heavy_layers=(128, 32),  # its speed is not the point here, that it runs is
        out=tmp_path,
    )
    assert result["broker"] == f"the cluster at {bootstrap_servers}"  # not "embedded noida-db"
    rates = result["throughput"]["events_per_second"]
    # the Quix Streams peer runs when its virtualenv exists; a GPU adds a CUDA worker row
    optional = {"quix per-message app, numpy": peers_python() is not None}
    optional["streamapp worker, device=cuda"] = torch.cuda.is_available()
    assert set(rates) == {name for name, present in optional.items() if present} | {
        "passthrough",
        "minimal batched loop",
        "naive per-event loop",
        "faust per-event agent",
        "streamapp worker",
        "streamapp worker, head only",
        "streamapp worker, batches of 2000",
        "streamapp worker, faust runtime",
        "streamapp worker, int8 backbone",
        "streamapp worker, onnx backbone",
    }
    assert all(rate > 0 for rate in rates.values())
    # the loops the targets compare report the median of their runs (one each here)
    runs = result["throughput"]["runs"]
    assert set(runs) == {"minimal batched loop", "streamapp worker"} | (
        {"quix per-message app, numpy"} if optional["quix per-message app, numpy"] else set()
    )
    assert all(rates[name] == values[0] for name, values in runs.items())
    paths = [level["path"] for level in result["latency"]]
    assert paths == [
        "one broker hop (floor)",
        "plain relay, no streamapp (two hops)",
        "through the worker (two hops)",
    ]
    for level in result["latency"]:
        assert level["predictions"] > 0 and level["p50_ms"] <= level["p99_ms"]
    assert result["learning_labels_per_s"] > 0
    profile = result["profile"]
    # both loops scored every event of the backlog, and each part of each took some CPU
    assert profile["predictions"] == {"minimal": 400, "worker": 400}
    assert list(profile["minimal_us_per_event"]) == ["parse", "score", "encode", "total"]
    assert list(profile["worker_us_per_event"]) == [
        "decode",
        "score",
        "ledger, learning and drift",
        "encode",
        "total",
    ]
    for parts in (profile["minimal_us_per_event"], profile["worker_us_per_event"]):
        assert all(value > 0 for value in parts.values())
    assert set(result["variants"]["variants"]) == {"torch", "int8", "onnx"}
    assert result["memory"]["peak_rss_mib"] > 0
    assert result["delivery"]["exactly_once_over_at_least_once"] > 0
    # two runs of each mode per round (A B B A); every run committed at least once (its
    # final commit), which blocked the loop a while
    for shares in result["delivery"]["commit_share"].values():
        assert len(shares) == 2 and all(0 < share < 1 for share in shares)
    assert set(result["scaleout"]["events_per_second"]) == {
        "1 scorer process",
        "2 scorer processes",
    }
    assert result["scaleout"]["partitions"] == 4
    assert result["scaleout"]["over_fewest"]["1 scorer process"] == 1.0
    assert result["formats"]["events"] == 400 and result["formats"]["avro_over_json"] > 0
    tasks = result["tasks"]  # a regression bundle beside two classifiers, each on its stream
    assert set(tasks["events_per_second"]) == {
        "regression, friedman-shift",
        "classification, hyperplane",
        "classification, digits-shift",
    }
    assert all(rate > 0 for rate in tasks["events_per_second"].values())
    assert set(tasks["regression_over"]) == {
        "classification, hyperplane",
        "classification, digits-shift",
    }
    heavy = result["heavy"]
    assert heavy["architecture"] == "64->128->32" and heavy["events"] == 200
    assert heavy["backbone_rows_per_s"] > 0 and heavy["worker_events_per_s"] > 0
    saved = orjson.loads((tmp_path / "bench.json").read_bytes())
    assert saved["throughput"]["events"] == 400
    table = (tmp_path / "bench.md").read_text()
    assert "| streamapp worker |" in table and "| p50 ms |" in table
    assert "At 200 events/s the worker adds " in table and "over the plain relay's" in table
    assert f"| streamapp worker | {rates['streamapp worker']:,} | 1.00 | " in table
    assert "blocked in commits: at-least-once" in table
    assert "**Throughput by task**" in table and "| regression, friedman-shift |" in table
    assert "**Where the time goes** (in process, no broker" in table
    assert "**Heavy backbone** (64->128->32 MLP, CPU" in table


@pytest.mark.parametrize("kind", ["noida", "kafka"])
def test_a_started_broker_is_named_with_its_version(
    kind: BrokerKind, broker_choice: BrokerChoice
) -> None:
    """What ``bench --broker`` measured on is named in the report (the old one said
    "embedded noida-db" for any loopback broker)."""
    if kind == "kafka" and broker_choice.kind != "kafka":
        pytest.skip("Apache Kafka cannot run here")
    with configured_or_started(Settings(), kind) as (settings, name):
        assert settings.kafka.bootstrap_servers
        partition_counts(settings, ["x"])  # it serves
    expected = {"noida": "noida-db 0.2.3", "kafka": f"Apache Kafka {KAFKA_VERSION}"}[kind]
    assert name == f"{expected}, started on this machine"
