"""Scenario and data-file records in a Schema Registry format, for ``streamapp produce
--format avro|json-schema|protobuf``: confluent-kafka's own serializers, the schemas the
twins in ``schemas/`` (Protobuf: :func:`~streamapp.codec.protobuf_wire.twin_classes`),
registered under the topic-name strategy on first use.

Feature events go in their list form (the Avro twin's ``features`` array), so a worker
reading them sets ``schema_registry.features_field=features``. A regression bundle's labels
(``task="regression"``) go with the ``regression-feedback`` twins: the target as a double.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Literal

from streamapp.codec.checks import Task
from streamapp.scenarios.base import Record
from streamapp.schemas import load_schema

__all__ = ["RegistryEncoder", "as_list_form"]

Format = Literal["avro", "json-schema", "protobuf"]


def as_list_form(record: Record, *, numeric_label: bool = False) -> dict[str, Any]:
    """A record's value with named features as a list (in their order) and without an
    absent ``ts``: the twins' shape. A label is a class (a string or an integer), or with
    ``numeric_label`` a regression target (a float).

    >>> as_list_form(Record("features", "e", {"event_id": "e", "features": {"x": 1.0}}, 0.0))
    {'event_id': 'e', 'features': [1.0]}
    >>> as_list_form(Record("feedback", "e", {"event_id": "e", "label": 2}, 0.0),
    ...              numeric_label=True)
    {'event_id': 'e', 'label': 2.0}
    """
    value = dict(record.value)
    features = value.get("features")
    if isinstance(features, dict):
        value["features"] = list(features.values())
    if record.kind == "feedback" and numeric_label:
        value["label"] = float(value["label"])  # numpy float32 too: the twins' double
    elif record.kind == "feedback" and not isinstance(value.get("label"), str | int):
        value["label"] = str(value.get("label"))
    return value


class RegistryEncoder:
    """``encode(record, topic)``: the record's value in ``fmt``, in the Confluent wire format
    (labels in the ``task``'s feedback twin)."""

    def __init__(self, client: Any, fmt: Format, *, task: Task = "classification") -> None:
        from confluent_kafka.schema_registry.avro import AvroSerializer
        from confluent_kafka.schema_registry.json_schema import JSONSerializer

        from streamapp.codec.avro_out import load_avro_schema

        self.format = fmt
        self.numeric_label = task == "regression"
        feedback = "regression-feedback" if self.numeric_label else "feedback"
        self._serializers: dict[str, Callable[[Any, Any], bytes]] = {}
        if fmt == "protobuf":
            from confluent_kafka.schema_registry.protobuf import ProtobufSerializer

            from streamapp.codec.protobuf_wire import twin_classes

            classes = twin_classes(task)
            conf = {"use.deprecated.format": False}
            for kind, cls in classes.items():
                self._serializers[kind] = _as_message(ProtobufSerializer(cls, client, conf), cls)
            return
        for kind, name in (("features", "feature-event"), ("feedback", feedback)):
            if fmt == "avro":
                schema = json.dumps(load_avro_schema(name))
                self._serializers[kind] = AvroSerializer(client, schema)
            else:
                schema = json.dumps(load_schema(name))
                self._serializers[kind] = JSONSerializer(schema, client)

    def __call__(self, record: Record, topic: str) -> bytes:
        from confluent_kafka.serialization import MessageField, SerializationContext

        ctx = SerializationContext(topic, MessageField.VALUE)
        doc = as_list_form(record, numeric_label=self.numeric_label)
        value: bytes = self._serializers[record.kind](doc, ctx)
        return value


def _as_message(serialize: Callable[[Any, Any], bytes], cls: Any) -> Callable[[Any, Any], bytes]:
    """``serialize`` of a dict, as the message ``cls`` (an absent ``ts``: unset)."""

    def encode(value: dict[str, Any], ctx: Any) -> bytes:
        return serialize(cls(**{k: v for k, v in value.items() if v is not None}), ctx)

    return encode
