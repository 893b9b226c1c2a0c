"""``streamapp bench``: measurements that only mean something as ratios within one run.

``throughput``: the full worker against (a) a consume -> produce passthrough, (b) a minimal
batched scoring loop and (c) a naive one-event-at-a-time loop with the same model, over the
same backlog on the same broker; plus learning throughput (join + ``learn_many``).
``delivery``: the full worker at-least-once vs exactly-once over the same backlog,
alternating runs, each with its own consumer group and output topics.
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

__all__ = ["run_delivery_bench", "run_throughput_bench"]

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


# -- throughput: the full worker against simpler loops over the same backlog ---------------


def _consumer(settings: Settings, topics: list[str]) -> Any:
    from confluent_kafka import Consumer

    from streamapp.kafka.config import consumer_config

    config = {k: v for k, v in consumer_config(settings).items() if k != "logger"}
    consumer = Consumer({**config, "group.id": f"bench-{uuid.uuid4().hex[:8]}"})
    consumer.subscribe(topics)
    return consumer


def _passthrough(settings: Settings, n: int) -> float:
    """(a) consume -> produce the bytes unchanged."""
    from confluent_kafka import Producer

    from streamapp.kafka.config import producer_config

    consumer = _consumer(settings, [settings.topics.features])
    producer = Producer(producer_config(settings))
    seen, started = 0, None
    while seen < n:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                continue
            started = started or time.perf_counter()
            producer.produce(settings.topics.predictions, msg.value(), msg.key())
            seen += 1
        producer.poll(0)
    producer.flush()
    consumer.close()
    return n / (time.perf_counter() - (started or 0))


def _scoring_loop(settings: Settings, n: int, batched: bool) -> float:
    """(b) a minimal batched scoring loop, or (c) the naive one-event-at-a-time loop."""
    import numpy as np
    import torch
    from confluent_kafka import Producer

    from streamapp.kafka.config import producer_config

    bundle = load_bundle(settings.bundle)
    pre = bundle.manifest.preprocessing
    mean = torch.tensor(pre["mean"], dtype=torch.float32)
    std = torch.tensor(pre["std"], dtype=torch.float32)
    coef = torch.tensor(bundle.head_coef, dtype=torch.float32)
    bias = torch.tensor(bundle.head_intercept, dtype=torch.float32)
    backbone = bundle.backbone.eval()
    classes = bundle.manifest.classes
    consumer = _consumer(settings, [settings.topics.features])
    producer = Producer(producer_config(settings))
    seen, started = 0, None
    while seen < n:
        messages = [m for m in consumer.consume(500 if batched else 1, 1.0) if not m.error()]
        if not messages:
            continue
        started = started or time.perf_counter()
        docs = [orjson.loads(m.value()) for m in messages]
        with torch.inference_mode():
            x = torch.from_numpy(np.array([d["features"] for d in docs], np.float32))
            proba = torch.softmax(backbone((x - mean) / std) @ coef.T + bias, dim=1).numpy()
        for msg, doc, p in zip(messages, docs, proba, strict=True):
            value = {"event_id": doc["event_id"], "label": classes[int(p.argmax())]}
            producer.produce(settings.topics.predictions, orjson.dumps(value), msg.key())
        seen += len(messages)
        producer.poll(0)
    producer.flush()
    consumer.close()
    return n / (time.perf_counter() - (started or 0))


def _learning_rate(settings: Settings, labels: int = 50_000) -> float:
    """Labels per second through the ledger join and ``learn_many`` (in process, no Kafka)."""
    import numpy as np

    from streamapp.codec import DecodedBatch
    from streamapp.events import FeatureBlock, Feedback, SourcePosition
    from streamapp.worker import build_pipeline

    pipeline = build_pipeline(settings, load_bundle(settings.bundle))
    X, y, _ = get_scenario("digits-shift").target_data(labels)
    batch = 500
    blocks = []
    for start in range(0, labels, batch):
        ids = [f"e{i}" for i in range(start, start + batch)]
        blocks.append(
            (
                FeatureBlock(
                    ids,
                    [None] * batch,
                    X[start : start + batch],
                    np.zeros(batch),
                    [SourcePosition("f", 0, i) for i in range(batch)],
                ),
                [
                    Feedback(event_id, int(label), 1.0)
                    for event_id, label in zip(ids, y[start : start + batch], strict=True)
                ],
            )
        )
    for block, _ in blocks:  # score first, so only join + learn is timed
        pipeline.process(DecodedBatch(block))
    empty = FeatureBlock.empty(X.shape[1])
    started = time.perf_counter()
    for _, feedback in blocks:
        pipeline.process(DecodedBatch(empty, feedback=feedback))
    return labels / (time.perf_counter() - started)


def run_throughput_bench(
    settings: Settings, events: int = 20_000, out: Path | None = None
) -> dict[str, Any]:
    with configured_or_embedded(settings) as settings:
        bundle_path = Path(settings.bundle)
        if not (bundle_path / "manifest.json").exists():
            train_source_bundle(get_scenario("digits-shift"), bundle_path)
        run_id = uuid.uuid4().hex[:6]

        def topics(name: str) -> Settings:
            return settings.with_overrides(
                **{
                    "topics.features": f"tp-features-{run_id}",
                    "topics.feedback": f"tp-feedback-{run_id}",
                    "topics.predictions": f"tp-{name}-{run_id}",
                    "topics.drift": f"tp-drift-{name}-{run_id}",
                    "topics.dead_letter": f"tp-dlq-{name}-{run_id}",
                    "topics.state": f"tp-state-{name}-{run_id}",
                    "group_id": f"tp-{name}-{run_id}",
                }
            )

        base = topics("worker")
        ensure_topics(base, partitions=2)
        records = list(stream(get_scenario("digits-shift"), events, rate=2000, label_delay_s=1.0))
        produce_records(base, records)
        rates: dict[str, float] = {}
        for name, measure in (
            ("passthrough", lambda s: _passthrough(s, events)),
            ("minimal batched loop", lambda s: _scoring_loop(s, events, batched=True)),
            ("naive per-event loop", lambda s: _scoring_loop(s, min(events, 3000), batched=False)),
            ("streamapp worker", lambda s: _timed_run(s, len(records))),
        ):
            run = topics(name.split()[0])
            ensure_topics(run, partitions=2)
            rates[name] = measure(run)
            logger.info("%s: %.0f events/s", name, rates[name])
        rates["learning (labels/s, in process)"] = _learning_rate(settings)
    worker = rates["streamapp worker"]
    result = {
        "events": events,
        "events_per_second": rates,
        "worker_over_minimal_batched": worker / rates["minimal batched loop"],
        "worker_over_naive": worker / rates["naive per-event loop"],
        "worker_over_passthrough": worker / rates["passthrough"],
    }
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "throughput.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
    return result
