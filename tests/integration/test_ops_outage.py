"""A broker outage seen from the outside: ``/readyz`` answers at once and says 503, and with
``--log-format json`` every line the worker writes is JSON, its librdkafka errors included
and rate-limited."""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import defaultdict
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from streamapp.kafka import ensure_topics
from streamapp.kafka.admin import BrokerProbe
from streamapp.kafka.brokers import Broker
from streamapp.kafka.config import LIBRDKAFKA_REPEAT_S
from streamapp.kafka.local_broker import free_port
from streamapp.settings import Settings
from tests.conftest import settings_env, wait_until

READYZ_BOUND_S = 1.0  # Kubernetes' default probe timeout; the answer takes milliseconds


def readyz(port: int) -> tuple[int, dict, float]:
    """Status, checks and how long the answer took."""
    began = time.perf_counter()
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=10) as response:
            status, body = response.status, response.read()
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read()
    return status, orjson.loads(body)["checks"], time.perf_counter() - began


def test_the_probe_answers_from_its_state_and_logs_only_through_the_logger(
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = Settings(kafka={"bootstrap_servers": f"127.0.0.1:{free_port()}"})  # nothing listens
    probe = BrokerProbe(settings, interval_s=0.2, timeout_s=0.5)
    try:
        wait_until(lambda: probe.refreshes >= 3, "three refreshes of the probe", 5)
        began = time.perf_counter()
        assert probe.reachable() is False
        assert time.perf_counter() - began < 0.05  # no request on the caller's thread
        assert probe.refreshes >= 3
    finally:
        probe.close()
    # librdkafka writes ``%3|...|FAIL|...`` to stderr itself unless a logger takes its logs
    captured = capfd.readouterr()
    assert "|FAIL|" not in captured.err + captured.out


@pytest.mark.integration
@pytest.mark.slow
def test_a_broker_outage_keeps_readyz_fast_and_every_log_line_json(
    own_broker: Broker, digits_bundle: Path, tmp_path: Path
) -> None:
    broker = own_broker
    port = free_port()
    settings = Settings(
        kafka={
            "bootstrap_servers": broker.bootstrap_servers,
            "group_id": "outage",
            "properties": {"session.timeout.ms": "6000"},
        },
        model={"bundle": digits_bundle},
        delivery={"commit_interval_ms": 200},
        http={"enabled": True, "host": "127.0.0.1", "port": port},
    )
    ensure_topics(settings)
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    command = [sys.executable, "-m", "streamapp", "--log-format", "json", "--log-level", "INFO"]
    with out.open("wb") as stdout, err.open("wb") as stderr:
        worker = subprocess.Popen(
            [*command, "run"], env=settings_env(settings), stdout=stdout, stderr=stderr
        )
    try:
        wait_for(lambda: ready_now(port), 90, err)
        broker.stop(kill=True)
        outage_ends = time.monotonic() + 6
        answers = []
        while time.monotonic() < outage_ends:
            answers.append(readyz(port))
            time.sleep(0.25)  # the scenario: /readyz sampled 4 times a second through the outage
        broker.start()
        wait_for(lambda: readyz(port)[1]["broker_reachable"], 60, err)
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    assert max(seconds for _, _, seconds in answers) < READYZ_BOUND_S
    down = [checks for status, checks, _ in answers if status == 503]
    assert down and not down[-1]["broker_reachable"], answers
    lines = [line for path in (out, err) for line in path.read_text().splitlines()]
    records = [orjson.loads(line) for line in lines]  # every line: one JSON object
    assert all(isinstance(record, dict) and record["level"] for record in records)
    rdkafka = [r for r in records if r["logger"] == "streamapp.kafka.librdkafka"]
    assert any(r["level"] == "ERROR" for r in rdkafka)  # the outage was logged, once in a while
    assert_rate_limited(rdkafka)


def ready_now(port: int) -> bool:
    try:
        return readyz(port)[0] == 200
    except (urllib.error.URLError, ConnectionError):
        return False  # the server is not up yet


def wait_for(condition: Callable[[], bool], timeout: float, log: Path) -> None:
    """``wait_until`` that shows the worker's log when it times out."""
    wait_until(
        condition, lambda: f"timed out; worker log:\n{log.read_text()[-3000:]}", timeout, 0.2
    )


def assert_rate_limited(records: list[dict]) -> None:
    """The same message (numbers aside) at most once per ``LIBRDKAFKA_REPEAT_S``."""
    times = defaultdict(list)
    for record in records:
        if record["level"] in ("WARNING", "ERROR", "CRITICAL"):
            shape = re.sub(r"\d+", "#", record["message"])
            times[shape].append(datetime.fromisoformat(record["ts"]).timestamp())
    for shape, seen in times.items():
        span = max(seen) - min(seen)
        assert (len(seen) - 1) * LIBRDKAFKA_REPEAT_S <= span + 0.5, (shape, len(seen), span)
