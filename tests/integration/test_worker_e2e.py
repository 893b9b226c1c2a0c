"""N events + delayed feedback in -> exactly N schema-valid predictions out, drift out, learning."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable

import pytest

from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, read_topic

pytestmark = pytest.mark.integration


def test_events_and_delayed_feedback_become_predictions_drift_and_learning(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(partitions=2, **{"drift.window_events": 500})
    n = 4000
    records = list(stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.5))
    produce_records(settings, records)

    with Worker(settings) as worker:
        summary = worker.run(count=len(records), timeout=120)
    assert summary.messages == len(records)
    assert summary.events_scored == n

    predictions = read_topic(settings, settings.topics.predictions, expected=n)
    ids = Counter(doc["event_id"] for _, doc in predictions)
    assert len(predictions) == n
    assert set(ids) == {f"e{i}" for i in range(n)}
    assert max(ids.values()) == 1
    for key, doc in predictions:
        assert_valid("prediction", doc)
        assert key == doc["event_id"].encode()  # keyed like the feature event
        assert doc["model"]["name"] == "digits-shift"
    # every prediction carries its conformal set: calibrated online on the delayed labels (the
    # first ones before any label joined: every class), more often right than the top class
    # alone, and informative (the coverage target itself is the coverage benchmark's)
    truth = {r.value["event_id"]: r.value["label"] for r in records if r.kind == "feedback"}
    sets = [doc["prediction_set"] for _, doc in predictions]
    assert all(s["coverage"] == 0.9 for s in sets)
    covered = sum(
        truth[doc["event_id"]] in doc["prediction_set"]["classes"] for _, doc in predictions
    )
    top1 = sum(truth[doc["event_id"]] == doc["label"] for _, doc in predictions)
    print(f"sets cover {covered / n:.3f} of the labels, the top class {top1 / n:.3f}")
    assert covered > top1 + n // 20
    assert sum(len(s["classes"]) for s in sets) / n < 8
    head_seqs = [doc["model"]["head_seq"] for _, doc in predictions]
    assert min(head_seqs) == 0
    # later events were scored by a head that had learned (how much depends on how far the
    # consumer read the feedback topic ahead of or behind the features topic)
    assert max(head_seqs) >= n // 4
    assert len(set(head_seqs)) > 3

    # a report closes the first batch that fills the 500-event window, so windows overshoot
    reports = [doc for _, doc in read_topic(settings, settings.topics.drift, idle=2)]
    assert len(reports) >= n // 500 - 2
    assert sum(r["window"]["events"] for r in reports) <= n
    for report in reports:
        assert_valid("drift-report", report)
    assert all(r["dataset"]["drifted"] for r in reports)  # target differs from the source
    last = reports[-1]
    assert last["labels"]["joined"] + last["labels"]["parked"] >= last["model"]["head_seq"]
    assert last["performance"]["accuracy"] > last["performance"]["source_accuracy"] + 0.1
    since_start = last["conformal"]["since_start"]
    assert 0 < since_start["labels"] <= last["labels"]["joined"]  # the served sets calibrate
    assert since_start["coverage"] is not None and 0 < since_start["coverage"] <= 1
    assert since_start["mean_size"] is not None and math.isfinite(since_start["mean_size"])
    assert not read_topic(settings, settings.topics.dead_letter, timeout=3, idle=1)
