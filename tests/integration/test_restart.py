"""Stop the worker gracefully mid-stream (SIGTERM) and start it again: nothing is lost."""

from __future__ import annotations

import signal
import time
from collections import Counter
from collections.abc import Callable

import pytest

from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from tests.conftest import WorkerProcesses, read_topic

pytestmark = pytest.mark.integration


def wait_for_predictions(settings: Settings, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = len(read_topic(settings, settings.topics.predictions, timeout=3, idle=0.5))
        if seen >= at_least:
            return seen
    raise AssertionError(f"fewer than {at_least} predictions after {timeout}s")


def test_graceful_stop_mid_stream_and_restart_loses_nothing(
    make_settings: Callable[..., Settings], workers: WorkerProcesses
) -> None:
    settings = make_settings(partitions=2, **{"batch.max_size": 100, "drift.window_events": 700})
    n = 4000
    produce_records(settings, stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=1.0))

    first = workers.start(settings)
    workers.wait_for("worker", "assigned")
    wait_for_predictions(settings, at_least=200)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    assert "finishing the batch and shutting down" in workers.log()
    # the last, partial window was published on the way out: the reports cover every event
    # the first worker scored, however many windows that was
    scored = len(read_topic(settings, settings.topics.predictions, idle=1))
    reports = [doc for _, doc in read_topic(settings, settings.topics.drift, idle=1)]
    assert sum(report["window"]["events"] for report in reports) == scored

    second = workers.start(settings)
    workers.wait_for("worker", "assigned", count=2)
    predictions = read_topic(settings, settings.topics.predictions, timeout=90, idle=8)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    counts = Counter(doc["event_id"] for _, doc in predictions)
    assert set(counts) == {f"e{i}" for i in range(n)}  # every event predicted at least once
