"""``streamapp bench``: measurements that only mean something as ratios within one run.

``delivery``: the full worker at-least-once vs exactly-once over the same backlog on the
same broker, alternating runs, each with its own consumer group and output topics.
"""

from __future__ import annotations

import logging
import statistics
import time
import uuid
from pathlib import Path
from typing import Any

import orjson

from streamapp.events import Outputs
from streamapp.kafka.admin import ensure_topics
from streamapp.kafka.local_broker import configured_or_embedded
from streamapp.model.bundle import load_bundle
from streamapp.model.training import train_source_bundle
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings, TopicNames
from streamapp.worker import Worker

__all__ = ["run_delivery_bench"]

logger = logging.getLogger(__name__)


def _timed_run(settings: Settings, total: int) -> float:
    """Events per second from the first processed batch to the last commit."""
    first: list[float] = []

    def on_batch(_worker: Worker, _outputs: Outputs) -> None:
        if not first:
            first.append(time.perf_counter())

    worker = Worker(settings, on_batch=on_batch)
    try:
        summary = worker.run(count=total, timeout=600)
        end = time.perf_counter()
    finally:
        worker.close()
    return summary.events_scored / (end - first[0])


def run_delivery_bench(
    settings: Settings, events: int = 20_000, repeat: int = 3, out: Path | None = None
) -> dict[str, Any]:
    with configured_or_embedded(settings) as settings:
        bundle_path = Path(settings.bundle)
        if not (bundle_path / "manifest.json").exists():
            train_source_bundle(get_scenario("digits-shift"), bundle_path)
        load_bundle(bundle_path)
        run_id = uuid.uuid4().hex[:6]
        inputs = settings.with_overrides(
            **{
                "topics.features": f"bench-features-{run_id}",
                "topics.feedback": f"bench-feedback-{run_id}",
            }
        )
        ensure_topics(inputs, partitions=2)
        records = list(stream(get_scenario("digits-shift"), events, rate=2000, label_delay_s=1.0))
        produce_records(inputs, records)
        rates: dict[str, list[float]] = {"at-least-once": [], "exactly-once": []}
        for i in range(repeat):
            for mode in rates:
                suffix = f"{run_id}-{mode}-{i}"
                run = inputs.with_overrides(
                    processing_guarantee=mode,
                    group_id=f"bench-{suffix}",
                    instance_id=suffix,
                    topics=TopicNames(
                        features=inputs.topics.features,
                        feedback=inputs.topics.feedback,
                        predictions=f"bench-predictions-{suffix}",
                        drift=f"bench-drift-{suffix}",
                        dead_letter=f"bench-dlq-{suffix}",
                        state=f"bench-state-{suffix}",
                    ),
                )
                ensure_topics(run, partitions=2)
                rates[mode].append(_timed_run(run, len(records)))
                logger.info("%s run %d: %.0f events/s", mode, i + 1, rates[mode][-1])
    median = {mode: statistics.median(values) for mode, values in rates.items()}
    result = {
        "events": events,
        "repeat": repeat,
        "events_per_second": rates,
        "median_events_per_second": median,
        "exactly_once_over_at_least_once": median["exactly-once"] / median["at-least-once"],
        "commit_interval_ms": settings.commit_interval_ms,
        "batch_max_size": settings.batch.max_size,
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "delivery.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result
