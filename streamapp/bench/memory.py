"""Resident memory of a worker process over a long stream, with the ledger at its bound.

Half of the events get a label, so unlabeled served rows pile up in the ledger until it
reaches ``ledger.max_entries`` and evicts the oldest: after that point nothing in the worker
should grow. The worker runs as ``streamapp run``; this process produces the stream in
chunks while the worker consumes it (the backlog stays under ``max_backlog`` events, which
also keeps noida-db's fetch responses small), samples the worker's RSS from /proc and its
progress from the group's committed offsets.
"""

from __future__ import annotations

import logging
import subprocess
import time
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from streamapp.bench.common import (
    SCENARIO,
    chunks,
    end_offsets,
    plain_consumer,
    read_rss_bytes,
    start_worker_process,
    stop_process,
)
from streamapp.kafka.admin import ensure_topics
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings

__all__ = ["measure_memory"]

logger = logging.getLogger(__name__)

_CHUNK = 20_000  # events generated and produced at a time


class _Progress:
    """The worker's committed input offsets and its RSS, sampled together."""

    def __init__(
        self, settings: Settings, partitions: int, worker: subprocess.Popen[bytes]
    ) -> None:
        self.worker = worker
        self.topics = settings.topics.inputs()
        self.partitions = partitions
        self.probe: Consumer = plain_consumer(settings, [], group=settings.kafka.group_id)
        self.samples: list[tuple[int, int]] = []  # (feature events done, rss bytes)

    def committed(self, topic: str) -> int:
        wanted = [TopicPartition(topic, p) for p in range(self.partitions)]
        return sum(max(tp.offset, 0) for tp in self.probe.committed(wanted, timeout=10))

    def wait(self, done: Callable[[int], bool], sample_s: float) -> None:
        """Sample every ``sample_s`` until ``done(feature events committed)``."""
        while True:
            if self.worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {self.worker.returncode}")
            features = self.committed(self.topics[0])
            rss = read_rss_bytes(self.worker.pid)
            if rss is not None:
                self.samples.append((features, rss))
            if done(features):
                return
            time.sleep(sample_s)


def measure_memory(
    settings: Settings,
    events: int,
    partitions: int = 2,
    sample_s: float = 1.0,
    max_backlog: int = 40_000,
) -> dict[str, Any]:
    ensure_topics(settings, partitions=partitions)
    scenario = get_scenario(SCENARIO)
    worker = start_worker_process(settings)
    progress = _Progress(settings, partitions, worker)
    started = time.monotonic()
    start_ts = time.time()
    try:
        for start, size in chunks(events, _CHUNK):

            def backlog_small(done: int, start: int = start) -> bool:
                return start - done <= max_backlog

            progress.wait(backlog_small, sample_s)
            records = stream(
                scenario,
                size,
                rate=2000,
                label_delay_s=1.0,
                label_fraction=0.5,
                start_ts=start_ts + start / 2000,
                seed=start,
                id_prefix=f"m{start}-",
            )
            produce_records(settings, records)
            logger.info("memory bench: produced %d of %d events", start + size, events)
        labels_end = sum(end_offsets(progress.probe, progress.topics[1], partitions).values())
        progress.wait(lambda done: done >= events, sample_s)
        progress.wait(lambda _: progress.committed(progress.topics[1]) >= labels_end, sample_s)
        seconds = time.monotonic() - started
    finally:
        progress.probe.close()
        stop_process(worker, timeout=60)
    return _summary(progress.samples, events, seconds, settings.ledger.max_entries)


def _summary(
    samples: list[tuple[int, int]], events: int, seconds: float, bound: int
) -> dict[str, Any]:
    # the ledger is full once ~2 * bound events were served (half of them stay unlabeled)
    steady_from = min(0.5, 2.5 * bound / events)
    shares = [(done / events, rss) for done, rss in samples]
    steady = [rss for share, rss in shares if share >= steady_from]
    mib = 1024 * 1024
    at = {
        f"{int(q * 100)}%": round(next((r for s, r in shares if s >= q), shares[-1][1]) / mib)
        for q in (0.1, 0.25, 0.5, 0.75, 1.0)
    }
    return {
        "events": events,
        "seconds": round(seconds, 1),
        "events_per_s": round(events / seconds),
        "ledger_max_entries": bound,
        "rss_mib_at_progress": at,
        "peak_rss_mib": round(max(r for _, r in shares) / mib),
        "steady_from_progress": round(steady_from, 2),
        "steady_min_mib": round(min(steady) / mib) if steady else None,
        "steady_max_mib": round(max(steady) / mib) if steady else None,
        "steady_growth": round(max(steady) / min(steady) - 1, 3) if steady else None,
    }
