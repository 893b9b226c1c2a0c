"""The worker's /metrics, /healthz and /readyz over real HTTP while it runs on the broker."""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamapp.drift.history import read_reports, render_report
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import produce_raw, wait_until

pytestmark = pytest.mark.integration


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def scrape(port: int) -> dict[str, float]:
    """Samples by ``name{label="value",...}``."""
    status, body = get(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    samples = {}
    for family in text_string_to_metric_families(body.decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_metrics_and_health_endpoints_describe_a_running_worker(
    make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    settings = make_settings(
        partitions=2, **{"http.enabled": True, "http.port": 0, "drift.window_events": 500}
    )
    n = 2000
    records = list(stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.5))
    produce_records(settings, records)
    produce_raw(settings, [(settings.topics.features, b"bad", b"{not json")])

    worker = Worker(settings)
    worker.start()
    port = worker.http_port or 0
    status, body = get(f"http://127.0.0.1:{port}/readyz")
    assert status == 503  # started, but no partitions assigned before the first poll
    assert orjson.loads(body)["checks"]["partitions_assigned"] is False

    thread = threading.Thread(target=worker.run, kwargs={"timeout": 90})
    thread.start()
    try:
        wait_until(lambda: worker.pipeline.ledger.counts.joined >= n, "every label joined", 90)
        assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        status, body = get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200, body
        assert orjson.loads(body)["checks"] == {
            "model_loaded": True,
            "partitions_assigned": True,
            "broker_reachable": True,
        }
        metrics: dict[str, float] = {}
        lags: list[float] = []

        def lag_of_every_partition() -> bool:  # 2 topics x 2 partitions
            metrics.clear()
            metrics.update(scrape(port))
            lags[:] = [v for k, v in metrics.items() if k.startswith("streamapp_consumer_lag{")]
            return len(lags) == 4

        # lag is refreshed once a second on the poll thread
        wait_until(lag_of_every_partition, lambda: f"lag of {len(lags)} partitions", 10, 0.2)
        assert get(f"http://127.0.0.1:{port}/nothing-here")[0] == 404
    finally:
        worker.stop()
        thread.join()
        worker.close()

    assert metrics["streamapp_events_scored_total"] == n
    assert metrics["streamapp_messages_consumed_total"] == len(records) + 1
    assert metrics['streamapp_dead_letters_total{reason="decode"}'] == 1
    assert metrics['streamapp_labels_total{outcome="joined"}'] == n
    outcomes = [v for k, v in metrics.items() if k.startswith("streamapp_labels_total{")]
    assert len(outcomes) == 4 and sum(outcomes) == n  # each label counted once
    assert metrics["streamapp_labels_parked"] == 0
    assert metrics['streamapp_ledger_events_total{outcome="expired"}'] >= 0
    assert metrics["streamapp_events_redelivered_total"] == 0
    # at-least-once: the exactly-once counter is there, at 0 (a panel shows 0, not no data)
    assert metrics["streamapp_transaction_aborts_total"] == 0
    assert metrics["process_resident_memory_bytes"] > 0
    assert metrics["process_start_time_seconds"] > 0
    assert metrics["streamapp_head_examples_learned_total"] == n
    assert metrics["streamapp_batch_size_count"] == metrics["streamapp_batches_total"]
    assert metrics["streamapp_batch_size_sum"] == len(records) + 1
    assert metrics['streamapp_event_latency_seconds_bucket{le="+Inf"}'] == n
    assert metrics["streamapp_commits_total"] >= 1
    info = [k for k in metrics if k.startswith("streamapp_model_info")]
    assert info and 'name="digits-shift"' in info[0]
    assert len(lags) == 4 and all(v >= 0 for v in lags)  # 2 topics x 2 partitions
    assert metrics["streamapp_drift_reports_total"] >= 1
    psi = [k for k in metrics if k.startswith("streamapp_drift_feature_psi{")]
    assert len(psi) == len(worker.bundle.manifest.feature_names)
    assert 0 <= metrics["streamapp_rolling_accuracy"] <= 1

    # the same run's drift history, read back from its topic and rendered
    reports = read_reports(settings, settings.topics.drift)
    assert len(reports) == metrics["streamapp_drift_reports_total"]
    png, page = render_report(reports, tmp_path)
    assert png.stat().st_size > 20_000 and page.stat().st_size > png.stat().st_size
