"""Stop the worker gracefully mid-stream (SIGTERM) and start it again: nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from tests.conftest import read_topic

pytestmark = pytest.mark.integration


def worker_env(settings: Settings) -> dict[str, str]:
    t = settings.topics
    return {
        **os.environ,
        "STREAMAPP_BOOTSTRAP_SERVERS": settings.bootstrap_servers or "",
        "STREAMAPP_GROUP_ID": settings.group_id,
        "STREAMAPP_BUNDLE": str(settings.bundle),
        "STREAMAPP_KAFKA": '{"session.timeout.ms": "6000"}',
        "STREAMAPP_COMMIT_INTERVAL_MS": "200",
        "STREAMAPP_BATCH__MAX_SIZE": "100",
        "STREAMAPP_TOPICS__FEATURES": t.features,
        "STREAMAPP_TOPICS__FEEDBACK": t.feedback,
        "STREAMAPP_TOPICS__PREDICTIONS": t.predictions,
        "STREAMAPP_TOPICS__DRIFT": t.drift,
        "STREAMAPP_TOPICS__DEAD_LETTER": t.dead_letter,
    }


def start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "streamapp", "--log-level", "INFO", "run"],
            env=worker_env(settings),
            stdout=out,
            stderr=subprocess.STDOUT,
        )


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Callable[[Settings], subprocess.Popen[bytes]]]:
    """Starts worker processes; kills any still running at the end and shows their logs."""
    started: list[subprocess.Popen[bytes]] = []
    log = tmp_path / "worker.log"

    def start(settings: Settings) -> subprocess.Popen[bytes]:
        started.append(start_worker(settings, log))
        return started[-1]

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
            process.wait()
    sys.stderr.write(log.read_text()[-4000:] if log.exists() else "")


def wait_for_predictions(settings: Settings, at_least: int, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        seen = len(read_topic(settings, settings.topics.predictions, timeout=3, idle=0.5))
        if seen >= at_least:
            return seen
    raise AssertionError(f"fewer than {at_least} predictions after {timeout}s")


def test_graceful_stop_mid_stream_and_restart_loses_nothing(
    make_settings: Callable[..., Settings],
    workers: Callable[[Settings], subprocess.Popen[bytes]],
    tmp_path: Path,
) -> None:
    settings = make_settings(partitions=2)
    n = 4000
    produce_records(settings, stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=1.0))

    first = workers(settings)
    wait_for_predictions(settings, at_least=200)
    first.send_signal(signal.SIGTERM)
    assert first.wait(timeout=60) == 0
    assert "finishing the batch and shutting down" in (tmp_path / "worker.log").read_text()

    second = workers(settings)
    predictions = read_topic(settings, settings.topics.predictions, timeout=90, idle=8)
    second.send_signal(signal.SIGTERM)
    assert second.wait(timeout=60) == 0
    counts = Counter(doc["event_id"] for _, doc in predictions)
    assert set(counts) == {f"e{i}" for i in range(n)}  # every event predicted at least once


def test_a_second_signal_forces_exit(
    make_settings: Callable[..., Settings], workers: Callable[[Settings], subprocess.Popen[bytes]]
) -> None:
    worker = workers(make_settings())
    time.sleep(4)  # let it join the group
    worker.send_signal(signal.SIGINT)
    worker.send_signal(signal.SIGINT)
    assert worker.wait(timeout=30) in (0, 128 + signal.SIGINT)
