"""Scale-out: the same backlog through 1, 2, ... scorer processes (plus a learner).

Each run gets its own consumer group, output topics and learner; the rate is measured on
the predictions' producer timestamps, like every other loop. The target (4 scorers at least
3.2x one) is for a machine with 8 cores or more: on fewer, the scorers share them.
"""

from __future__ import annotations

import logging
import subprocess
import time
from typing import Any

from streamapp.bench.common import (
    Backlog,
    output_rate,
    plain_consumer,
    start_worker_process,
    stop_process,
)
from streamapp.settings import Settings

__all__ = ["measure_scale_out", "partitions_for", "scorer_name"]

_JOIN_S = 6.0  # a scorer's start (imports, bundle) and first join

logger = logging.getLogger(__name__)


def _wait_for_predictions(settings: Settings, events: int, timeout: float) -> None:
    consumer = plain_consumer(settings, [settings.topics.predictions])
    seen: set[bytes] = set()
    deadline = time.monotonic() + timeout
    try:
        while len(seen) < events:
            if time.monotonic() > deadline:
                raise RuntimeError(f"scale-out: {len(seen)} of {events} predictions")
            seen.update(m.key() or b"" for m in consumer.consume(5000, 0.5) if not m.error())
    finally:
        consumer.close()


def partitions_for(scorers: tuple[int, ...]) -> int:
    """Input partitions for a run of up to ``max(scorers)`` scorers: two per scorer, at least
    four, so every scorer gets the same share.

    >>> partitions_for((1, 2)), partitions_for((1, 2, 4)), partitions_for((8,))
    (4, 8, 16)
    """
    return max(4, 2 * max(scorers))


def scorer_name(count: int) -> str:
    """The row name of a run with ``count`` scorers."""
    return f"{count} scorer process{'es' if count > 1 else ''}"


def measure_scale_out(
    settings: Settings,
    events: int,
    scorers: tuple[int, ...] = (1, 2),
    partitions: int | None = None,
) -> dict[str, Any]:
    """Scorers (and the learner) start on empty topics, one after the other, and have joined
    before the events are produced, so every run measures the same steady state. Each count
    is compared with the smallest (``over_fewest``: its rate over that run's)."""
    if not scorers or min(scorers) < 1:
        raise ValueError(f"scorer counts must be positive, not {scorers}")
    partitions = partitions or partitions_for(scorers)
    rates: dict[str, float] = {}
    for count in scorers:
        backlog = Backlog(settings, f"scaleout{count}", partitions=partitions)
        run = backlog.for_loop(f"scorers{count}", role="scorer")
        processes: list[subprocess.Popen[bytes]] = [
            start_worker_process(
                run.with_overrides(**{"role": "learner", "delivery.instance_id": "learner"})
            )
        ]
        try:
            for i in range(count):
                processes.append(
                    start_worker_process(run.with_overrides(**{"delivery.instance_id": f"s{i}"}))
                )
                time.sleep(_JOIN_S)  # noida-db can stall two first joins at once
            backlog.fill(events)
            _wait_for_predictions(run, events, timeout=600)
        finally:
            for process in processes:
                stop_process(process)
        name = scorer_name(count)
        rates[name] = round(output_rate(run, run.topics.predictions, events))
        logger.info("scale-out, %s: %s events/s", name, f"{rates[name]:,}")
    fewest = rates[scorer_name(min(scorers))]
    return {
        "events": events,
        "partitions": partitions,
        "events_per_second": rates,
        "over_fewest": {name: round(rate / fewest, 2) for name, rate in rates.items()},
    }
