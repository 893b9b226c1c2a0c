"""Drift reports under exactly-once: after an aborted transaction or a kill, every committed
report has its own ``report_seq`` (1, 2, 3, ... with no gap and no repeat) and every scored
event is counted in exactly one committed window, however the replay's batches fall."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Callable

import pytest

from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import WorkerProcesses, read_topic, wait_until

pytestmark = pytest.mark.integration

EOS = {
    "delivery.processing_guarantee": "exactly-once",
    "delivery.instance_id": "w1",
    "delivery.commit_interval_ms": 0,  # a commit after every batch: the fault lands between reports
    "delivery.snapshot_interval_s": 600.0,  # one snapshot at the start: the replay is long
    "drift.window_events": 100,
}


def committed_reports(settings: Settings) -> list[dict]:
    return [doc for _, doc in read_topic(settings, settings.topics.drift, idle=2)]


def assert_reports_exactly_once(reports: list[dict], events: int) -> None:
    seqs = [report["report_seq"] for report in reports]
    assert sorted(seqs) == list(range(1, len(seqs) + 1)), f"report_seq {seqs}"
    assert sum(report["window"]["events"] for report in reports) == events


def test_an_aborted_transaction_after_drift_reports_repeats_and_skips_no_report(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(partitions=2, **EOS)
    n = 900
    records = list(stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.2, seed=3))
    failed = threading.Event()

    def fail_once_after_four_reports(point: str) -> None:
        if not failed.is_set() and worker.pipeline.monitor.reports >= 4:
            failed.set()
            raise RuntimeError(f"injected fault at {point}")

    worker = Worker(settings, fault_hook=fail_once_after_four_reports)
    with worker:
        runner = threading.Thread(target=worker.run, kwargs={"timeout": 120})
        runner.start()
        try:
            # trickles: live batches are small, while the replay reads its backlog in big ones
            for start in range(0, len(records), 40):
                produce_records(settings, records[start : start + 40])
                time.sleep(0.15)  # the producer's pacing: the stream trickles in
            wait_until(lambda: worker.pipeline.stats.events_scored >= n, "all events scored", 90)
        finally:
            worker.stop()
            runner.join(60)
    assert failed.is_set() and worker.recoveries == 1
    assert_reports_exactly_once(committed_reports(settings), n)


@pytest.mark.slow
def test_kill_9_right_after_drift_reports_repeats_and_skips_no_report(
    make_settings: Callable[..., Settings], workers: WorkerProcesses
) -> None:
    settings = make_settings(partitions=2, **{**EOS, "delivery.commit_interval_ms": 100})
    n = 1200
    records = list(stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.2, seed=4))
    chunks = [records[start : start + 40] for start in range(0, len(records), 40)]
    process = workers.start(settings)
    for kill_after_report in (3, 7):  # a kill as soon as the report is in the open transaction
        while f"drift report {kill_after_report}:" not in workers.log():
            produce_records(settings, chunks.pop(0))
            time.sleep(0.15)  # the producer's pacing: the stream trickles in
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = workers.start(settings)
    for chunk in chunks:
        produce_records(settings, chunk)
        time.sleep(0.05)  # the producer's pacing: the rest trickles in too
    predictions = read_topic(settings, settings.topics.predictions, n, timeout=120, idle=30)
    assert len({doc["event_id"] for _, doc in predictions}) == n
    process.send_signal(signal.SIGTERM)  # the last partial window is reported on the way out
    assert process.wait(60) == 0
    assert workers.log().count("restored snapshot") >= 2
    assert_reports_exactly_once(committed_reports(settings), n)
