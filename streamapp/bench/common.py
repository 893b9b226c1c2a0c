"""What every benchmark shares: the bundle, a backlog on fresh topics, and one clock for all
loops (the Kafka timestamps of their outputs)."""

from __future__ import annotations

import logging
import os
import platform
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamapp.kafka.admin import ensure_topics
from streamapp.kafka.config import consumer_config
from streamapp.model.training import train_source_bundle
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings

__all__ = [
    "Backlog",
    "ensure_bundle",
    "machine",
    "output_rate",
    "plain_consumer",
    "read_rss_bytes",
    "run_order",
    "start_worker_process",
    "stop_process",
]

logger = logging.getLogger(__name__)

SCENARIO = "digits-shift"


def ensure_bundle(settings: Settings, scenario: str = SCENARIO) -> Path:
    """The configured bundle (another ``scenario``'s: ``models/<scenario>/1`` beside it),
    trained first when it does not exist yet."""
    path = Path(settings.model.bundle)
    if scenario != SCENARIO:
        path = path.parent.parent / scenario / "1"
    if not (path / "manifest.json").exists():
        train_source_bundle(get_scenario(scenario), path)
    return path


class Backlog:
    """Two fresh input topics (``fill`` puts a scenario's events and labels on them); each
    loop gets its own output topics and consumer group, so they all read the same bytes."""

    def __init__(self, settings: Settings, name: str = "bench", partitions: int = 2) -> None:
        self.run_id = f"{name}-{uuid.uuid4().hex[:6]}"
        self.partitions = partitions
        self.events = self.messages = 0
        self.settings = settings.with_overrides(
            **{
                "topics.features": f"bench-features-{self.run_id}",
                "topics.feedback": f"bench-feedback-{self.run_id}",
            }
        )
        ensure_topics(self.settings, partitions=partitions)

    def fill(self, events: int, scenario: str = SCENARIO) -> Backlog:
        records = stream(get_scenario(scenario), events, rate=2000, label_delay_s=1.0)
        self.messages += produce_records(self.settings, records)
        self.events += events
        return self

    def for_loop(self, name: str, **overrides: Any) -> Settings:
        """Settings for one loop: its own outputs, group and state topic."""
        slug = f"{name}-{self.run_id}"
        run = self.settings.with_overrides(
            **{
                "kafka.group_id": f"bench-{slug}",
                "delivery.instance_id": slug,
                "topics.predictions": f"bench-out-{slug}",
                "topics.drift": f"bench-drift-{slug}",
                "topics.dead_letter": f"bench-dlq-{slug}",
                "topics.state": f"bench-state-{slug}",
                "topics.training_examples": f"bench-examples-{slug}",
                "topics.model_updates": f"bench-updates-{slug}",
                "topics.model_control": f"bench-control-{slug}",
                "http.port": 0,  # the endpoints stay on, as deployed, on a free port each
            },
            **overrides,
        )
        ensure_topics(run, partitions=self.partitions)
        return run


def plain_consumer(
    settings: Settings, topics: list[str], group: str | None = None, **overrides: Any
) -> Consumer:
    """A consumer subscribed to ``topics`` in ``group`` (default: a fresh one)."""
    config = {k: v for k, v in consumer_config(settings).items() if k != "logger"}
    config.pop("group.instance.id", None)
    group = group or f"bench-{uuid.uuid4().hex[:8]}"
    consumer = Consumer({**config, "group.id": group, **overrides})
    if topics:
        consumer.subscribe(topics)
    return consumer


def _read_timestamps(settings: Settings, topic: str, expected: int, timeout: float) -> list[int]:
    consumer = plain_consumer(settings, [topic], **{"isolation.level": "read_uncommitted"})
    stamps: list[int] = []
    deadline = time.monotonic() + timeout
    try:
        while len(stamps) < expected and time.monotonic() < deadline:
            stamps += [m.timestamp()[1] for m in consumer.consume(5000, 0.5) if not m.error()]
    finally:
        consumer.close()
    return stamps


def output_rate(settings: Settings, topic: str, outputs: int, events: int | None = None) -> float:
    """Events per second between the first and the last of the ``outputs`` records a loop
    wrote to ``topic`` (producer timestamps): one clock for in-process loops and the Faust
    subprocess alike. ``events`` (default ``outputs``) is how many feature events they cover."""
    stamps = _read_timestamps(settings, topic, outputs, timeout=60.0)
    if len(stamps) < outputs:
        raise RuntimeError(f"{topic}: {len(stamps)} of {outputs} outputs")
    span = max(max(stamps) - min(stamps), 1) / 1000.0  # millisecond timestamps
    return (events or outputs) / span


def start_worker_process(settings: Settings) -> subprocess.Popen[bytes]:
    """``streamapp run`` with ``settings`` (and no other STREAMAPP_* variables) as deployed."""
    return subprocess.Popen(
        [sys.executable, "-m", "streamapp", "--log-level", "WARNING", "run"],
        env=settings.subprocess_env(),
        stdout=subprocess.DEVNULL,
    )


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30.0) -> None:
    """SIGTERM (a graceful shutdown), then SIGKILL if it has not exited within ``timeout``."""
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def end_offsets(consumer: Consumer, topic: str, partitions: int) -> dict[int, int]:
    return {
        p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
        for p in range(partitions)
    }


def read_rss_bytes(pid: int | None = None) -> int | None:
    """Resident set size of ``pid`` (default: this process) from /proc; None elsewhere."""
    path = Path(f"/proc/{pid or os.getpid()}/status")
    try:
        for line in path.read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    import torch

    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }


def chunks(total: int, size: int) -> Iterator[tuple[int, int]]:
    for start in range(0, total, size):
        yield start, min(size, total - start)


def run_order(names: list[str], repeated: set[str], repeat: int) -> list[str]:
    """Every loop once, then ``repeat - 1`` more rounds of the ``repeated`` ones: the loops
    the targets compare alternate, so a minute when the shared machine is slow falls on all.
    Each round starts one loop further along (a run is slower after some loops than after
    others: which loop comes first must not depend on the loop).

    >>> run_order(["a", "b", "c"], {"a", "c"}, 3)
    ['a', 'b', 'c', 'c', 'a', 'a', 'c']
    >>> run_order(["a", "b"], set(), 3)
    ['a', 'b']
    >>> run_order(["a", "b"], {"a", "b"}, 3)  # two loops: A B B A A B
    ['a', 'b', 'b', 'a', 'a', 'b']
    """
    compared = [name for name in names if name in repeated]
    rounds = [
        compared[(shift + k) % len(compared)]
        for shift in range(1, max(repeat, 1))
        for k in range(len(compared))
    ]
    return [*names, *rounds]
