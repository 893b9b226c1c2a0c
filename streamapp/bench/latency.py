"""End-to-end latency at fixed offered loads: producer send -> prediction received.

The worker runs as ``streamapp run`` in its own process, as deployed. This process offers
feature events at each rate in turn (each carrying its send time as ``ts``), sends their labels
half a second later (so the ledger and learning work as in production), and a consumer of
``predictions`` takes ``receive time - event ts`` for every prediction. The first second of
each level is left out (the batch size adapts to the new rate).

Two references run the same way, each on topics of its own: one produce -> consume hop (the
floor the broker sets), and two hops through a plain relay process
(:mod:`streamapp.bench.relay`), which shows what the broker and the machine add to two hops
under the same load, tail included.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from collections import deque
from typing import Any

import numpy as np
import orjson
from confluent_kafka import Producer

from streamapp.bench.common import (
    SCENARIO,
    Backlog,
    plain_consumer,
    start_worker_process,
    stop_process,
)
from streamapp.kafka.config import producer_config
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings

__all__ = ["ONE_HOP", "RELAY", "WORKER", "measure_latency"]

logger = logging.getLogger(__name__)

ONE_HOP = "one broker hop (floor)"
RELAY = "plain relay, no streamapp (two hops)"
WORKER = "through the worker (two hops)"

_TICK_S = 0.005  # the producer sends a burst every 5 ms
_WARMUP_S = 1.0


def measure_latency(
    settings: Settings, loads: list[int], seconds: float = 10.0
) -> list[dict[str, Any]]:
    """p50/p95/p99/max latency in milliseconds at each offered load (events/s): one hop,
    two hops through a plain relay, and through the worker (each path's levels in order)."""
    scenario = get_scenario(SCENARIO)
    X, y, _ = scenario.target_data(20_000)
    rows = [row.tolist() for row in X]
    labels = [scenario.classes[i] for i in y]
    floor = Backlog(settings, "latency-floor").settings
    results = [
        {"path": ONE_HOP, **level}
        for level in _levels(floor, floor.topics.features, rows, labels, loads, seconds)
    ]
    relayed = Backlog(settings, "latency-relay").for_loop("relay")  # its own outputs and group
    for path, process_settings, command in (
        (RELAY, relayed, [sys.executable, "-m", "streamapp.bench.relay"]),
        (WORKER, settings, None),
    ):
        process = (
            start_worker_process(process_settings)
            if command is None
            else subprocess.Popen(command, env=process_settings.subprocess_env())
        )
        try:
            topic = process_settings.topics.predictions
            for level in _levels(process_settings, topic, rows, labels, loads, seconds):
                results.append({"path": path, **level})
        finally:
            stop_process(process)
    return results


def _levels(
    settings: Settings,
    read_topic: str,
    rows: list[list[float]],
    labels: list[str],
    loads: list[int],
    seconds: float,
) -> list[dict[str, Any]]:
    received: deque[tuple[float, float]] = deque()  # (event ts, receive time)
    stop = threading.Event()
    reader = threading.Thread(
        target=_receive, args=(settings, read_topic, received, stop), daemon=True
    )
    reader.start()
    producer = Producer(producer_config(settings, **{"linger.ms": 0}))
    try:
        _wait_until_answered(producer, settings, rows, received)
        results = []
        for rate in loads:
            started = time.time()
            _offer(producer, settings, rows, labels, rate, seconds)
            time.sleep(1.0)  # let the last events through
            window = [
                (rcv - ts) * 1000.0
                for ts, rcv in list(received)
                if started + _WARMUP_S <= ts <= started + seconds
            ]
            results.append(_summary(rate, window, seconds - _WARMUP_S))
            logger.info("latency at %d events/s via %s: %s", rate, read_topic, results[-1])
        return results
    finally:
        stop.set()
        reader.join(10)


def _receive(
    settings: Settings, topic: str, out: deque[tuple[float, float]], stop: threading.Event
) -> None:
    # poll() returns on the first message (consume(n) would wait to fill n)
    consumer = plain_consumer(settings, [topic], None, **{"fetch.wait.max.ms": 5})
    try:
        while not stop.is_set():
            msg = consumer.poll(0.05)
            if msg is not None and not msg.error() and (value := msg.value()) is not None:
                doc = orjson.loads(value)
                out.append((doc.get("event_ts", doc.get("ts")), time.time()))
    finally:
        consumer.close()


def _wait_until_answered(
    producer: Producer,
    settings: Settings,
    rows: list[list[float]],
    received: deque[tuple[float, float]],
    timeout: float = 120.0,
) -> None:
    """Trickle events until the reader sees results (the worker has joined its group)."""
    deadline = time.monotonic() + timeout
    i = 0
    while not received:
        if time.monotonic() > deadline:
            raise RuntimeError(f"no answer within {timeout:.0f} s")
        _send(producer, settings.topics.features, f"warmup-{i}", rows[i % len(rows)])
        producer.poll(0)
        i += 1
        time.sleep(0.1)
    time.sleep(1.0)
    received.clear()


def _send(producer: Producer, topic: str, event_id: str, features: list[float]) -> None:
    value = orjson.dumps({"event_id": event_id, "ts": time.time(), "features": features})
    producer.produce(topic, value, event_id.encode())


def _offer(
    producer: Producer,
    settings: Settings,
    rows: list[list[float]],
    labels: list[str],
    rate: int,
    seconds: float,
) -> None:
    """Send ``rate`` events per second for ``seconds``, each labeled 0.5 s later."""
    topics = settings.topics
    pending: deque[tuple[float, str, str]] = deque()
    started = time.monotonic()
    sent = 0
    while (elapsed := time.monotonic() - started) < seconds:
        due = int(elapsed * rate)
        while sent < due:
            event_id = f"l{rate}-{sent}"
            _send(producer, topics.features, event_id, rows[sent % len(rows)])
            pending.append((time.time() + 0.5, event_id, labels[sent % len(labels)]))
            sent += 1
        while pending and pending[0][0] <= time.time():
            _, event_id, label = pending.popleft()
            value = orjson.dumps({"event_id": event_id, "label": label, "ts": time.time()})
            producer.produce(topics.feedback, value, event_id.encode())
        producer.poll(0)
        time.sleep(_TICK_S)
    producer.flush(10)


def _summary(rate: int, latencies_ms: list[float], seconds: float) -> dict[str, Any]:
    values = np.asarray(latencies_ms)
    if not len(values):
        return {"offered_per_s": rate, "predictions": 0}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {
        "offered_per_s": rate,
        "predictions": len(values),
        "delivered_per_s": round(len(values) / seconds),
        "p50_ms": round(float(p50), 1),
        "p95_ms": round(float(p95), 1),
        "p99_ms": round(float(p99), 1),
        "max_ms": round(float(values.max()), 1),
    }
