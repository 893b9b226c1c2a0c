"""kill -9 of an exactly-once worker while its group rebalances, then a restart with the same id.

Drift reports are frequent (every 100 events), so the snapshots a restart restores were taken
right after a report: the state that once made every restart crash. With static membership
the killed instance keeps its partitions until it comes back, so a restart that failed would
leave its partitions unread.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable

import pytest

from streamapp.kafka.topic_reader import read_to_end
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from tests.conftest import WorkerProcesses
from tests.integration.test_exactly_once import EOS, exactly_once

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# (whose log line, which line, how many of them): the moment the first worker is killed
MOMENTS = {
    "second-joins": ("b", "worker started", 1),
    "first-revokes": ("a", "revoking", 1),
    "second-assigned": ("b", "assigned", 1),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_9_during_a_rebalance_then_restart_loses_and_duplicates_nothing(
    make_settings: Callable[..., Settings], workers: WorkerProcesses, moment: str
) -> None:
    settings = make_settings(partitions=4, **{**EOS, "drift.window_events": 100})
    records = stream(get_scenario("digits-shift"), 20_000, rate=200, label_delay_s=0.5, seed=3)
    # paced and open-ended, so the rebalance and the restart happen while events arrive
    stop = threading.Event()
    producing = threading.Thread(
        target=produce_records, args=(settings, records), kwargs={"realtime": True, "stop": stop}
    )
    producing.start()
    a, b = (settings.with_overrides(**{"delivery.instance_id": name}) for name in ("a", "b"))
    try:
        first = workers.start(a, name="a")
        workers.wait_for("a", "drift report", timeout=90)  # its snapshots follow a report
        second = workers.start(b, name="b")
        whose, line, count = MOMENTS[moment]
        workers.wait_for(whose, line, count=count, timeout=90)
        first.send_signal(signal.SIGKILL)
        assert first.wait(timeout=30) == -signal.SIGKILL
        reports = workers.log("a").count("drift report")
        restarted = workers.start(a, name="a")
        workers.wait_for("a", "restored snapshot", timeout=90)
        workers.wait_for("a", "drift report", count=reports + 1, timeout=90)  # serving again
    finally:
        stop.set()
        producing.join()

    n = len(read_to_end(settings, settings.topics.features, "expected"))
    assert n < 20_000, "the stream ended before the faults: nothing was tested"
    counts = exactly_once(settings, n, timeout=150)
    assert max(counts.values()) == 1, "duplicated predictions in read_committed"
    assert restarted.poll() is None and second.poll() is None
    for process in (restarted, second):
        process.send_signal(signal.SIGTERM)
    assert [p.wait(timeout=60) for p in (restarted, second)] == [0, 0]
