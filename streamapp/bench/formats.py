"""Avro input beside JSON input, in one run: the same backlog (events and their labels) in
streamapp's own JSON and in Avro (the Confluent wire format, written by confluent-kafka's
own AvroSerializer with a record of one double per feature, the shape a Kafka shop's
producer writes), through the worker's per-batch work in process (decode, score, learn,
encode), rounds alternating. The Avro worker reads its schemas from a real registry: the one
``schema_registry.url`` names, else an Apicurio Registry started for the run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import statistics
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson

from streamapp.assembly import build_codec, build_pipeline, load_served_bundle
from streamapp.bench.common import run_order
from streamapp.bench.profile import InputRecord, backlog_records
from streamapp.settings import Settings

__all__ = ["measure_formats"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _registry(settings: Settings) -> Iterator[str]:
    if settings.schema_registry.url is not None:
        yield settings.schema_registry.url
        return
    from streamapp.kafka.schema_registry import ApicurioRegistry

    with tempfile.TemporaryDirectory() as data, ApicurioRegistry(Path(data)) as registry:
        yield registry.url


def _avro_records(
    records: list[InputRecord], url: str, feature_names: list[str], features_topic: str
) -> list[InputRecord]:
    """``records`` re-encoded as a producer writes them in Avro."""
    from confluent_kafka.schema_registry import SchemaRegistryClient
    from confluent_kafka.schema_registry.avro import AvroSerializer
    from confluent_kafka.serialization import MessageField, SerializationContext

    event_fields = [{"name": name, "type": "double"} for name in feature_names]
    event = {
        "type": "record",
        "name": "FeatureEvent",
        "namespace": "bench",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "ts", "type": ["null", "double"], "default": None},
            *event_fields,
        ],
    }
    label = {
        "type": "record",
        "name": "Label",
        "namespace": "bench",
        "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "label", "type": "string"},
            {"name": "ts", "type": ["null", "double"], "default": None},
        ],
    }
    out = []
    with SchemaRegistryClient({"url": url}) as client:
        serializers = {
            True: AvroSerializer(client, json.dumps(event)),
            False: AvroSerializer(client, json.dumps(label)),
        }
        for r in records:
            doc = orjson.loads(r.value())
            is_event = r.topic() == features_topic
            if is_event:
                doc = {
                    "event_id": doc["event_id"],
                    "ts": doc.get("ts"),
                    **dict(zip(feature_names, doc["features"], strict=True)),
                }
            ctx = SerializationContext(r.topic(), MessageField.VALUE)
            value = serializers[is_event](doc, ctx)
            out.append(InputRecord(r.topic(), r.offset(), r.key(), value, r.timestamp()[1]))
    return out


def _round(settings: Settings, batches: list[list[InputRecord]]) -> dict[str, float]:
    """Thread CPU seconds of the worker's per-batch work, decode apart, on fresh state."""
    bundle = load_served_bundle(settings)
    codec, pipeline = build_codec(settings, bundle), build_pipeline(settings, bundle)
    decode = total = 0.0
    events = 0
    for batch in batches:
        began = time.thread_time()
        decoded = codec.decode_batch(batch)
        decoded_at = time.thread_time()
        scored = pipeline.score(decoded)
        if scored.predictions is not None:
            events += len(scored.predictions)
            codec.encode_predictions(scored.predictions, bundle.name, bundle.version)
        pipeline.learn(scored)
        ended = time.thread_time()
        decode += decoded_at - began
        total += ended - began
    if hasattr(codec, "features_wire") and codec.features_wire is not None:
        codec.features_wire.client.close()
    return {"decode_s": decode, "total_s": total, "events": events}


def measure_formats(settings: Settings, events: int = 20_000, rounds: int = 3) -> dict[str, Any]:
    """Events/s of the worker's per-batch CPU and decode µs per event, JSON and Avro input,
    medians of alternating rounds; ``avro_over_json``: the ratio of their rates."""
    records = backlog_records(settings, events)
    size = settings.batch.max_size
    bundle = load_served_bundle(settings)
    with _registry(settings) as url:
        avro = _avro_records(
            records, url, list(bundle.manifest.feature_names), settings.topics.features
        )
        avro_settings = settings.with_overrides(
            **{
                "schema_registry.url": url,
                "schema_registry.features_format": "avro",
                "schema_registry.feedback_format": "avro",
            }
        )
        inputs = {"json": (settings, records), "avro": (avro_settings, avro)}
        runs: dict[str, list[dict[str, float]]] = {"json": [], "avro": []}
        for name in run_order(list(inputs), set(inputs), rounds):
            chosen, recs = inputs[name]
            batches = [recs[i : i + size] for i in range(0, len(recs), size)]
            result = _round(chosen, batches)
            if result["events"] != events:
                raise RuntimeError(f"{name}: {result['events']} of {events} events predicted")
            runs[name].append(result)
    table = {
        name: {
            "events_per_s": round(events / statistics.median(r["total_s"] for r in rs)),
            "decode_us_per_event": round(
                statistics.median(r["decode_s"] for r in rs) / events * 1e6, 2
            ),
            "input_bytes_per_event": round(
                sum(len(r.value()) for r in (records if name == "json" else avro)) / events, 1
            ),
        }
        for name, rs in runs.items()
    }
    ratio = round(table["avro"]["events_per_s"] / table["json"]["events_per_s"], 3)
    logger.info("input formats: %s; avro/json %.2f", table, ratio)
    return {"events": events, "rounds": rounds, "formats": table, "avro_over_json": ratio}
