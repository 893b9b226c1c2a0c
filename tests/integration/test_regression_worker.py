"""A regression bundle served by the worker on the real broker: numeric feedback in, values
with conformal intervals out, bad targets dead-lettered, MAE/RMSE/R² in the drift reports,
and a restart in exactly-once mode that publishes every event once and learns every target."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamapp.assembly import build_pipeline
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, produce_raw, read_topic

pytestmark = pytest.mark.integration

N = 3000


def test_numeric_targets_become_values_with_intervals_learning_and_regression_reports(
    make_settings: Callable[..., Settings], friedman_bundle: Path
) -> None:
    settings = make_settings(
        partitions=2,
        bundle=friedman_bundle,
        **{"drift.window_events": 1000, "delivery.processing_guarantee": "exactly-once"},
    )
    records = list(stream(get_scenario("friedman-shift"), N, rate=1000, label_delay_s=0.3))
    produce_records(settings, records)
    topics = settings.topics
    bad = [
        (b"e1", b'{"event_id": "e1", "label": "12.5"}', "schema"),  # a string is not a number
        (b"e2", b'{"event_id": "e2", "label": true}', "schema"),
        (b"e3", b'{"event_id": "e3", "label": null}', "schema"),
        (b"e4", b'{"event_id": "e4", "label": 1e999}', "non_finite"),
        (b"e5", b'{"event_id": "e5", "label": 1e300}', "value_range"),
    ]
    produce_raw(settings, [(topics.feedback, key, value) for key, value, _ in bad])

    first = len(records) // 2
    with Worker(settings) as worker:  # half the stream, then a restart
        worker.run(count=first, timeout=120)
    with Worker(settings) as worker:
        worker.run(count=len(records) + len(bad) - first, timeout=120)
        learned = worker.pipeline.head.n_learned

    predictions = read_topic(settings, topics.predictions, expected=N)
    assert sorted(doc["event_id"] for _, doc in predictions) == sorted(f"e{i}" for i in range(N))
    for key, doc in predictions:
        assert_valid("regression-prediction", doc)
        assert key == doc["event_id"].encode()
    truth = {r.value["event_id"]: r.value["label"] for r in records if r.kind == "feedback"}
    assert learned == N  # every valid target once, across the restart
    # every value has an interval, unbounded (null ends) until enough targets have joined and
    # while ACI pays back the misses of the shift half-way; the report counts them as served
    assert all("interval" in doc for _, doc in predictions)
    bounded = [d for _, d in predictions if d["interval"]["low"] is not None]
    assert len(bounded) > N // 4
    covered = [
        d["interval"]["low"] is None
        or d["interval"]["low"] <= truth[d["event_id"]] <= d["interval"]["high"]
        for _, d in predictions
    ]
    reports = [doc for _, doc in read_topic(settings, topics.drift, idle=2)]
    since_start = reports[-1]["conformal"]["since_start"]
    assert since_start["labels"] == N
    assert abs(np.mean(covered) - since_start["coverage"]) < 0.01
    assert since_start["unbounded"] == N - len(bounded)
    # the events served after most targets were learned: better than the frozen source model
    late = [d for _, d in predictions if d["model"]["head_seq"] >= N // 2]
    assert len(late) > N // 10
    features = {r.value["event_id"]: r.value["features"] for r in records if r.kind == "features"}
    fresh = build_pipeline(settings, load_bundle(friedman_bundle))
    X = np.array([features[d["event_id"]] for d in late], np.float32)
    frozen = fresh.source_predict(fresh.embed(X))
    y = np.array([truth[d["event_id"]] for d in late])
    served = np.array([d["value"] for d in late])
    assert np.abs(served - y).mean() < 0.9 * np.abs(frozen - y).mean()

    dead = read_topic(settings, topics.dead_letter, expected=len(bad))
    reasons = {doc["source"]["offset"]: doc["error"]["type"] for _, doc in dead}
    assert sorted(reasons.values()) == sorted(reason for *_, reason in bad)
    for _, doc in dead:
        assert_valid("dead-letter", doc)

    for report in reports:
        assert_valid("drift-report", report)
    last = reports[-1]["performance"]
    assert last["labels_total"] > 0 and last["mae"] > 0 and last["rmse"] >= last["mae"]
    assert "r2" in last and "residual" in last
    assert set(reports[-1]["prediction"]["counts"]) == {
        k for r in reports for k in r["prediction"]["counts"]
    }
    assert "adapted_mae" in reports[-1]["guard"]
    assert orjson.loads(orjson.dumps(reports[-1]["conformal"]))["since_start"]["labels"] > 0
