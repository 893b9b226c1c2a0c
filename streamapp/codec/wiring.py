"""The registry formats, set up from the settings: the client, a
:class:`~streamapp.codec.registry.WireReader` per input topic in a registry format, and the
start-up check of the field mapping against each topic's latest schema.

Nothing here runs for topics in streamapp's own JSON (the default): the registry is asked
only by a worker configured to speak its formats.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp.codec.decode import BatchDecoder
from streamapp.codec.registry import FieldMapping, Role, WireReader
from streamapp.errors import ConfigError
from streamapp.settings import SchemaRegistrySettings, Settings, WireFormat

__all__ = ["check_mappings", "close_registry", "registry_client", "use_registry"]

logger = logging.getLogger(__name__)


def registry_client(registry: SchemaRegistrySettings) -> Any:
    """A ``SchemaRegistryClient`` (it connects on first use); quick to give up on one
    request, since the worker's own hold retries (with backoff) a registry that is away."""
    if registry.url is None:
        raise ConfigError("a registry format needs schema_registry.url")
    from confluent_kafka.schema_registry import SchemaRegistryClient

    # its INFO lines carry every request's URL: only trouble is worth a line (and no URL
    # should reach the logs with a user:password in it)
    for name in ("httpx", "httpx2", "httpcore"):
        logging.getLogger(name).setLevel(logging.WARNING)

    return SchemaRegistryClient(
        {**registry.client_config, "max.retries": 1, "retries.wait.ms": 100, "timeout": 5}
    )


def use_registry(codec: BatchDecoder, settings: Settings, client: Any | None = None) -> None:
    """Read the input topics ``settings`` put in a registry format with a
    :class:`WireReader` each (no I/O: the client connects on first use)."""
    registry = settings.schema_registry
    formats: dict[Role, WireFormat] = {
        "features": registry.features_format,
        "feedback": registry.feedback_format,
    }
    if all(f == "json" for f in formats.values()):
        return
    client = client if client is not None else registry_client(registry)
    mapping = FieldMapping.of(
        codec.feature_names,
        event_id=registry.event_id_field,
        ts=registry.ts_field,
        label=registry.label_field,
        array=registry.features_field,
        renamed=registry.feature_fields,
        numeric_label=codec.task == "regression",
    )
    for role, fmt in formats.items():
        if fmt == "json":
            continue
        reader = WireReader(
            client,
            fmt,
            mapping,
            role,
            max_payload_bytes=codec.max_payload_bytes,
        )
        if role == "features":
            codec.features_wire = reader
        else:
            codec.feedback_wire = reader


def check_mappings(codec: BatchDecoder) -> None:
    """Before consuming: each registry-format input's latest registered schema must map
    onto the bundle (:class:`~streamapp.errors.ConfigError`, one line, when it does not)."""
    for topic, reader in (
        (codec.features_topic, codec.features_wire),
        (codec.feedback_topic, codec.feedback_wire),
    ):
        if reader is None:
            continue
        latest = reader.check_latest(topic)
        if latest is None:
            logger.warning(
                "no %s schema registered for %s yet: each schema id is checked as it arrives",
                reader.format,
                topic,
            )
        else:
            logger.info("%s reads %s: the mapping fits %s", topic, reader.format, latest)


def close_registry(codec: BatchDecoder) -> None:
    """Close the registry client of ``codec``'s readers (its HTTP connections)."""
    clients = {id(r.client): r.client for r in (codec.features_wire, codec.feedback_wire) if r}
    for client in clients.values():
        client.close()
