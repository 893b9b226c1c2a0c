"""``streamapp produce`` of the regression scenario, against the real broker: feature events
and delayed feedback whose labels are JSON numbers, the targets of ``friedman-shift``."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from streamapp.cli import main
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings
from tests.conftest import read_topic

pytestmark = pytest.mark.integration


def test_produce_the_regression_scenario_sends_numeric_feedback(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    monkeypatch.setenv("STREAMAPP_TOPICS__FEATURES", settings.topics.features)
    monkeypatch.setenv("STREAMAPP_TOPICS__FEEDBACK", settings.topics.feedback)
    args = ["produce", "-b", str(settings.kafka.bootstrap_servers), "--task", "regression"]
    assert main([*args, "--events", "40", "--label-delay", "0.05", "--seed", "1"]) == 0
    events = read_topic(settings, settings.topics.features, expected=40)
    labels = read_topic(settings, settings.topics.feedback, expected=40, timeout=10, idle=1)
    _, y, _ = get_scenario("friedman-shift", seed=1).target_data(40)
    assert [len(doc["features"]) for _, doc in events] == [10] * 40
    by_id = {doc["event_id"]: doc["label"] for _, doc in labels}
    assert by_id == {f"e{i}": float(target) for i, target in enumerate(y.tolist())}
    assert all(type(label) is float for label in by_id.values())
