"""Throughput by task: the worker serving a regression bundle against classifiers, on the
same broker, each on a backlog of its own scenario (``streamapp bench tasks``).

``friedman-shift`` (regression, 10 inputs) is compared with ``hyperplane`` (2 classes, the
same 10 inputs: the like-for-like row) and ``digits-shift`` (10 classes, 64 inputs: the
suite's usual stream). Every loop is the default worker (guard, conformal sets or intervals,
drift, learning); runs alternate and the medians are reported.
"""

from __future__ import annotations

import logging
import statistics
from typing import Any

from streamapp.bench.common import Backlog, ensure_bundle, output_rate, run_order
from streamapp.bench.loops import run_worker
from streamapp.settings import Settings

__all__ = ["TASK_STREAMS", "measure_tasks"]

logger = logging.getLogger(__name__)

# row name -> scenario; the first is the regression bundle the others are compared with
TASK_STREAMS = {
    "regression, friedman-shift": "friedman-shift",
    "classification, hyperplane": "hyperplane",
    "classification, digits-shift": "digits-shift",
}


def measure_tasks(settings: Settings, events: int, repeat: int = 3) -> dict[str, Any]:
    """Events per second of the worker on each stream (medians of ``repeat`` runs), and the
    regression row over each classification row."""
    backlogs = {
        name: (Backlog(settings, name.split(", ")[1]).fill(events, scenario), scenario)
        for name, scenario in TASK_STREAMS.items()
    }
    runs: dict[str, list[int]] = {}
    for index, name in enumerate(run_order(list(TASK_STREAMS), set(TASK_STREAMS), repeat)):
        backlog, scenario = backlogs[name]
        bundle = ensure_bundle(settings, scenario)
        loop = backlog.for_loop(f"task{index}", **{"model.bundle": bundle})
        run_worker(loop, backlog.messages)
        rate = output_rate(loop, loop.topics.predictions, events, events)
        runs.setdefault(name, []).append(round(rate))
        logger.info("%s: %s events/s", name, f"{round(rate):,}")
    rates = {name: round(statistics.median(values)) for name, values in runs.items()}
    regression, *classifiers = TASK_STREAMS
    return {
        "events": events,
        "events_per_second": rates,
        "runs": runs,
        "regression_over": {
            name: round(rates[regression] / rates[name], 3) for name in classifiers
        },
    }
