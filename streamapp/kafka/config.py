"""librdkafka configurations for each client, from :class:`~streamapp.settings.Settings`.

streamapp's defaults come first; the ``kafka`` passthrough (SASL, TLS, tuning) wins.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp.errors import ConfigError
from streamapp.settings import Settings

__all__ = ["admin_config", "consumer_config", "producer_config"]


_LIBRDKAFKA_LOG = logging.getLogger("streamapp.kafka.librdkafka")


def _common(settings: Settings) -> dict[str, Any]:
    if not settings.bootstrap_servers:
        raise ConfigError("no bootstrap servers configured (STREAMAPP_BOOTSTRAP_SERVERS)")
    return {
        "bootstrap.servers": settings.bootstrap_servers,
        "client.id": settings.client_id,
        "logger": _LIBRDKAFKA_LOG,  # librdkafka's own logs go through Python logging
    }


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Offsets are committed explicitly by the checkpoint, never automatically."""
    return {
        **_common(settings),
        "group.id": settings.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        **settings.kafka,
        **overrides,
    }


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged, lightly batched."""
    return {
        **_common(settings),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.num.messages": 10_000,
        **{
            k: v
            for k, v in settings.kafka.items()
            if not k.startswith(("session.", "group.", "isolation."))
        },
        **overrides,
    }


def admin_config(settings: Settings) -> dict[str, Any]:
    keep = ("security.", "sasl.", "ssl.", "socket.", "client.")
    common = {k: v for k, v in _common(settings).items() if k != "logger"}
    return {**common, **{k: v for k, v in settings.kafka.items() if k.startswith(keep)}}
