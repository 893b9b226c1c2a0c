"""Resident memory of a worker process over a long backlog, with the ledger at its bound.

Half of the events get a label, so unlabeled served rows pile up in the ledger until it
reaches ``ledger.max_entries`` and evicts the oldest: after that point nothing in the worker
should grow. The worker runs as ``streamapp run``; this process samples its RSS from /proc
and its progress from the group's committed offsets.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import TopicPartition

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

_CHUNK = 100_000  # events generated at a time, so the producer side stays small too


def produce_long_backlog(settings: Settings, events: int, partitions: int) -> None:
    ensure_topics(settings, partitions=partitions)
    scenario = get_scenario(SCENARIO)
    start_ts = time.time()
    for start, size in chunks(events, _CHUNK):
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


def measure_memory(
    settings: Settings, events: int, partitions: int = 2, sample_s: float = 1.0
) -> dict[str, Any]:
    produce_long_backlog(settings, events, partitions)
    topics = settings.topics.inputs()
    probe = plain_consumer(settings, [], group=settings.group_id)  # reads its commits only
    targets = {t: end_offsets(probe, t, partitions) for t in topics}
    total = sum(sum(ends.values()) for ends in targets.values())
    wanted = [TopicPartition(t, p) for t in topics for p in range(partitions)]
    worker = start_worker_process(settings)
    samples: list[tuple[float, int]] = []  # (share of input done, rss bytes)
    started = time.monotonic()
    try:
        done = 0
        while done < total:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited with {worker.returncode}")
            time.sleep(sample_s)
            committed = probe.committed(wanted, timeout=10)
            done = sum(max(tp.offset, 0) for tp in committed)
            rss = read_rss_bytes(worker.pid)
            if rss is not None:
                samples.append((done / total, rss))
        seconds = time.monotonic() - started
    finally:
        probe.close()
        stop_process(worker, timeout=60)
    return _summary(samples, events, total, seconds, settings.ledger.max_entries)


def _summary(
    samples: list[tuple[float, int]], events: int, messages: int, seconds: float, bound: int
) -> dict[str, Any]:
    # the ledger is full once ~2 * bound events were served (half of them stay unlabeled)
    steady_from = min(0.5, 2.5 * bound / events)
    steady = [rss for share, rss in samples if share >= steady_from]
    mib = 1024 * 1024
    at = {
        f"{int(q * 100)}%": round(next((r for s, r in samples if s >= q), samples[-1][1]) / mib)
        for q in (0.1, 0.25, 0.5, 0.75, 1.0)
    }
    return {
        "events": events,
        "input_messages": messages,
        "seconds": round(seconds, 1),
        "ledger_max_entries": bound,
        "rss_mib_at_progress": at,
        "peak_rss_mib": round(max(r for _, r in samples) / mib),
        "steady_from_progress": round(steady_from, 2),
        "steady_min_mib": round(min(steady) / mib) if steady else None,
        "steady_max_mib": round(max(steady) / mib) if steady else None,
        "steady_growth": round(max(steady) / min(steady) - 1, 3) if steady else None,
    }
