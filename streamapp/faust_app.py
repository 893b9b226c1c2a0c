"""The faust-streaming runtime: the worker's pipeline as Faust agents.

For teams already on Faust::

    faust -A streamapp.faust_app worker -l info      # or: streamapp run --runtime faust

Configuration is the usual ``STREAMAPP_*`` settings. One agent per input topic takes
micro-batches with ``stream.take_events(batch.max_size, within=batch.idle_wait_ms)`` and
hands them to the same code as the default runtime: :class:`~streamapp.codec.Codec`,
:class:`~streamapp.pipeline.Pipeline` (model, ledger, learning, drift) and
:class:`~streamapp.publish.Publisher` (predictions, dead letters, drift reports). Both
agents run on one event loop, so the pipeline is never entered twice at once.

Semantics (see docs/operating.md): at-least-once only. Outputs are produced by streamapp's
producer and flushed before the batch's events are acknowledged, so Faust commits an
offset only after its outputs are delivered. There is no event-time merge of the two
topics (a label that overtakes its event is parked by the ledger until the event is
scored), no learning-state snapshot (a restart starts from the source head), no
exactly-once mode, and JSON only (the Schema Registry formats need the default runtime).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

import faust

from streamapp.assembly import build_codec, build_pipeline, load_served_bundle
from streamapp.kafka.config import producer_config
from streamapp.kafka.producer import OutputProducer
from streamapp.publish import Publisher
from streamapp.settings import Settings

__all__ = ["FaustRuntime", "app"]

logger = logging.getLogger(__name__)


class FaustMessage:
    """A Faust message seen through the codec's ``Message`` protocol."""

    __slots__ = ("_message",)

    def __init__(self, message: Any) -> None:
        self._message = message

    def topic(self) -> str | None:
        return self._message.topic

    def partition(self) -> int | None:
        return self._message.partition

    def offset(self) -> int | None:
        return self._message.offset

    def key(self) -> bytes | None:
        return self._message.key

    def value(self) -> bytes | None:
        return self._message.value

    def timestamp(self) -> tuple[int, int]:
        seconds = self._message.timestamp
        return (self._message.timestamp_type or 0, int(seconds * 1000) if seconds else -1)


class FaustRuntime:
    """Codec, pipeline and publisher for the agents; ``process`` runs one batch."""

    def __init__(self, settings: Settings) -> None:
        settings.schema_registry.require_json("faust")  # its agents hold no registry outage
        self.settings = settings
        self.bundle = load_served_bundle(settings)
        self.codec = build_codec(settings, self.bundle)
        self.pipeline = build_pipeline(settings, self.bundle)
        self.producer = OutputProducer(producer_config(settings))
        self.publisher = Publisher(
            self.producer, self.codec, settings.topics, self.bundle.name, self.bundle.version
        )

    def process(self, events: Sequence[Any]) -> None:
        decoded = self.codec.decode_batch(FaustMessage(e.message) for e in events)
        self.publisher.publish(self.pipeline.process(decoded))
        # delivered before Faust acknowledges (and later commits) these events
        self.producer.flush()


def _broker(settings: Settings) -> list[str]:
    servers = settings.kafka.bootstrap_servers or "localhost:9092"
    return [f"kafka://{server.strip()}" for server in servers.split(",")]


def _session_timeout_s(settings: Settings) -> float:
    return int(settings.kafka.properties.get("session.timeout.ms", "10000")) / 1000.0


def create_app(settings: Settings) -> tuple[faust.App, FaustRuntime]:
    runtime = FaustRuntime(settings)
    faust_app = faust.App(
        settings.kafka.group_id,
        broker=_broker(settings),
        store="memory://",
        web_enabled=False,
        topic_allow_declare=False,  # the topics are streamapp's (`streamapp topics`)
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=_session_timeout_s(settings),
    )
    raw = {
        "key_type": bytes,
        "value_type": bytes,
        "key_serializer": "raw",
        "value_serializer": "raw",
    }
    batch = settings.batch
    within = max(batch.idle_wait_ms, batch.max_wait_ms, 1) / 1000.0

    async def take_batches(stream: AsyncIterator[Any]) -> None:
        async for events in stream.take_events(batch.max_size, within=within):  # type: ignore[attr-defined]
            runtime.process(events)

    for name in settings.topics.inputs():
        faust_app.agent(faust_app.topic(name, **raw), name=f"streamapp.{name}")(take_batches)
    return faust_app, runtime


app, runtime = create_app(Settings())
