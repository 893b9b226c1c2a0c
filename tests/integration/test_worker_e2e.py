"""N events + delayed feedback in -> exactly N schema-valid predictions out, drift out, learning."""

from __future__ import annotations

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
    assert not read_topic(settings, settings.topics.dead_letter, timeout=3, idle=1)
