"""Output topics in Avro, in the Confluent wire format: predictions, drift reports
and dead letters, as downstream consumers read them with their usual deserializers.

The records are the JSON ones the codec writes (:mod:`streamapp.codec.encode`,
:mod:`streamapp.codec.dead_letters`, :func:`streamapp.codec.encode_json` for drift
reports), re-encoded by a sink in front of the producer; the schemas are the Avro twins in
``schemas/`` (``prediction.avsc`` or, for a regression bundle, ``regression-prediction.avsc``;
``drift-report.avsc``, ``dead-letter.avsc``), registered
at start under the topic-name strategy (subject ``<topic>-value``). A topic without a twin
(training examples, for the learner) stays JSON.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from typing import Any, Protocol

import orjson

from streamapp.codec.checks import Task
from streamapp.codec.registry import RegistryUnavailableError
from streamapp.schemas import schema_dir
from streamapp.settings import Settings

__all__ = ["AvroOutputs", "AvroSink", "avro_outputs", "load_avro_schema"]

logger = logging.getLogger(__name__)


def load_avro_schema(name: str) -> dict[str, Any]:
    """The Avro twin ``schemas/<name>.avsc``."""
    doc: dict[str, Any] = json.loads((schema_dir() / f"{name}.avsc").read_text())
    return doc


class _Sink(Protocol):
    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None: ...
    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None: ...


def _encoder(schema_id: int, schema: dict[str, Any]) -> Callable[[bytes], bytes]:
    import fastavro  # the registry extra: only a worker that writes Avro needs it

    parsed = fastavro.parse_schema(schema)
    header = b"\x00" + schema_id.to_bytes(4, "big")
    write = fastavro.schemaless_writer

    def encode(value: bytes) -> bytes:
        out = io.BytesIO()
        out.write(header)
        write(out, parsed, orjson.loads(value))
        return out.getvalue()

    return encode


class AvroOutputs:
    """The Avro encoder of each output topic that has one, by topic."""

    def __init__(self, encoders: dict[str, Callable[[bytes], bytes]]) -> None:
        self.encoders = encoders

    @classmethod
    def register(cls, client: Any, topics: dict[str, str]) -> AvroOutputs:
        """Register each ``topic``'s twin (``topics``: topic -> schema name) under
        ``<topic>-value`` and keep its encoder; :class:`RegistryUnavailableError` when the
        registry cannot answer (at start: one line)."""
        from confluent_kafka.schema_registry import Schema

        encoders = {}
        for topic, name in topics.items():
            schema = load_avro_schema(name)
            try:
                schema_id = client.register_schema(
                    f"{topic}-value", Schema(json.dumps(schema), "AVRO")
                )
            except Exception as exc:
                raise RegistryUnavailableError(
                    f"could not register {name}.avsc for {topic}: {type(exc).__name__}: {exc}"
                ) from None
            encoders[topic] = _encoder(schema_id, schema)
            logger.info("%s is written in Avro (schema id %d)", topic, schema_id)
        return cls(encoders)

    def sink(self, inner: _Sink) -> AvroSink:
        return AvroSink(inner, self.encoders)


class AvroSink:
    """A sink that writes the topics it has an encoder for in Avro, the others as they come."""

    def __init__(self, inner: _Sink, encoders: dict[str, Callable[[bytes], bytes]]) -> None:
        self.inner = inner
        self.encoders = encoders

    def produce(self, topic: str, value: bytes, key: bytes | None = None) -> None:
        encode = self.encoders.get(topic)
        self.inner.produce(topic, value if encode is None else encode(value), key)

    def produce_many(self, topic: str, records: list[tuple[bytes | None, bytes]]) -> None:
        encode = self.encoders.get(topic)
        if encode is not None:
            records = [(key, encode(value)) for key, value in records]
        self.inner.produce_many(topic, records)


def avro_outputs(
    settings: Settings, client: Any | None = None, *, task: Task = "classification"
) -> AvroOutputs | None:
    """The Avro outputs ``settings`` ask for (``schema_registry.output_format=avro``),
    registered now; ``None`` for JSON outputs. ``task``: the served bundle's, which says
    the predictions' twin."""
    registry = settings.schema_registry
    if registry.output_format != "avro":
        return None
    from streamapp.codec.wiring import registry_client

    topics = settings.topics
    prediction = "regression-prediction" if task == "regression" else "prediction"
    twins = {
        topics.predictions: prediction,
        topics.shadow_predictions: prediction,
        topics.drift: "drift-report",
        topics.dead_letter: "dead-letter",
    }
    own = client is None
    client = registry_client(registry) if client is None else client
    try:
        return AvroOutputs.register(client, twins)
    finally:
        if own:
            client.close()
