"""Champion/challenger on the broker: the challenger scores in shadow, both learn from the
same labels, the drift report names the better one, and auto-promotion moves the alias."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, read_topic
from tests.integration.test_lifecycle import control_events
from tests.unit.test_registry import registry_serving_v1

pytestmark = pytest.mark.integration


def test_the_report_names_the_better_head_and_auto_promotion_swaps_it_in(
    make_settings: Callable[..., Settings], digits_bundle: Path, tmp_path: Path
) -> None:
    registry = registry_serving_v1(digits_bundle, tmp_path, versions=2)
    # built so one is clearly better: the champion's head barely learns, the challenger's does
    settings = make_settings(
        partitions=2,
        **{"model.registry": tmp_path / "registry", "model.name": "digits-shift"},
        head={"eta0": 1e-7},
        finetune={"layers": 0},  # the two differ in their heads alone
        selection={"enabled": False},  # else the champion serves its scratch candidate instead
        challenger={
            "enabled": True,
            "bundle": tmp_path / "registry" / "digits-shift" / "2",
            "head": {"eta0": 0.01},
            "auto_promote": True,
            "min_labels": 1500,
            "margin": 0.05,
        },
        **{"drift.window_events": 500},
    )
    n = 5000
    produce_records(settings, stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.5))
    with Worker(settings) as worker:
        deadline = time.monotonic() + 120
        while worker.pipeline.stats.events_scored < n and time.monotonic() < deadline:
            worker.run(timeout=2)
        served_last = worker.bundle.version

    shadow = read_topic(settings, settings.topics.shadow_predictions, expected=n)
    assert {doc["event_id"] for _, doc in shadow} >= {f"e{i}" for i in range(n)}
    assert {doc["model"]["version"] for _, doc in shadow} == {"2"}
    predictions = read_topic(settings, settings.topics.predictions, expected=n)
    assert len({doc["event_id"] for _, doc in predictions}) == n  # shadow never leaks there

    reports = [doc for _, doc in read_topic(settings, settings.topics.drift, idle=2)]
    compared = [r for r in reports if r.get("challenger", {}).get("labels")]
    assert compared
    for report in compared:
        assert_valid("drift-report", report)
    verdict = compared[-1]["challenger"]
    assert verdict["better"] == "challenger"
    assert verdict["challenger"]["accuracy"] > verdict["champion"]["accuracy"] + 0.05
    assert verdict["mcnemar"]["p_value"] < 0.01
    assert verdict["promoted"] is True

    assert registry.aliases("digits-shift") == {"production": "2"}
    assert ("promote", "2") in [(e.type, e.version) for e in control_events(settings)]
    assert served_last == "2"  # the worker swapped the winner in without a restart
