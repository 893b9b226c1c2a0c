"""librdkafka configurations for each client, from :class:`~streamapp.settings.Settings`.

streamapp's defaults come first; the ``kafka`` passthrough (SASL, TLS, tuning) wins.
"""

from __future__ import annotations

import logging
from typing import Any

from streamapp.errors import ConfigError
from streamapp.ops.logs import RepeatFilter
from streamapp.settings import Settings

__all__ = [
    "PREFETCH_KBYTES",
    "admin_config",
    "consumer_config",
    "producer_config",
    "reader_config",
    "transactional_producer_config",
    "validate_timing",
]


logger = logging.getLogger(__name__)
_LIBRDKAFKA_LOG = logging.getLogger("streamapp.kafka.librdkafka")
# librdkafka's fetch queue bound per partition (it overshoots by up to one fetch response)
PREFETCH_KBYTES = 2048
# a broker outage makes every client log a connection error per reconnect attempt
LIBRDKAFKA_REPEAT_S = 10.0
_LIBRDKAFKA_LOG.addFilter(RepeatFilter(interval_s=LIBRDKAFKA_REPEAT_S))

# passthrough keys that only one side understands (librdkafka warns about the others)
_CONSUMER_ONLY = (
    "session.",
    "group.",
    "isolation.",
    "fetch.",
    "max.partition.fetch",
    "max.poll",
    "auto.offset",
    "enable.auto",
    "enable.partition.eof",
    "heartbeat.",
    "partition.assignment",
    "queued.",
    "check.crcs",
)
_PRODUCER_ONLY = (
    "acks",
    "linger.ms",
    "batch.",
    "compression.",
    "enable.idempotence",
    "transaction",
    "message.timeout",
    "queue.buffering",
    "retries",
    "retry.backoff",
    "delivery.timeout",
)


def _common(settings: Settings) -> dict[str, Any]:
    if not settings.kafka.bootstrap_servers:
        raise ConfigError("no bootstrap servers configured (STREAMAPP_KAFKA__BOOTSTRAP_SERVERS)")
    return {
        "bootstrap.servers": settings.kafka.bootstrap_servers,
        "client.id": settings.kafka.client_id,
        "logger": _LIBRDKAFKA_LOG,  # librdkafka's own logs go through Python logging
    }


# what the broker decides under the KIP-848 protocol (librdkafka refuses them there)
_CLASSIC_ONLY = (
    "session.timeout.ms",
    "heartbeat.interval.ms",
    "partition.assignment.strategy",
    "group.protocol.type",
)


def consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Offsets are committed explicitly by the checkpoint, never automatically.

    With ``group.protocol=consumer`` (KIP-848) the session timeout, heartbeat interval and
    assignor belong to the broker: a passthrough that sets them is warned about and dropped,
    and the broker's ``range`` assignor is asked for (co-partitioned inputs).
    """
    config = _classic_consumer_config(settings, **overrides)
    if str(config.get("group.protocol", "classic")).lower() != "consumer":
        return config
    # the broker's default assignor (uniform) splits features and feedback independently:
    # range gives partition i of both topics to one member, so a label meets its event
    config.setdefault("group.remote.assignor", "range")
    for key in _CLASSIC_ONLY:
        if key in config and (key in settings.kafka.properties or key in overrides):
            logger.warning(
                "%s is set by the broker under group.protocol=consumer (group.consumer.*): "
                "ignoring %s=%s",
                key,
                key,
                config[key],
            )
        config.pop(key, None)
    return config


def _classic_consumer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        **_common(settings),
        "group.id": settings.kafka.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        "isolation.level": "read_committed",
        "session.timeout.ms": 10_000,
        "max.poll.interval.ms": settings.kafka.max_poll_interval_ms,
        # a resumed (or newly caught-up) partition joins the next fetch request: do not let
        # an idle fetch hold the broker connection for librdkafka's default 500 ms
        "fetch.wait.max.ms": 100,
        # prefetch a few batches per partition, not librdkafka's 64 MB: a pause (backpressure)
        # throws the prefetched data away to be fetched again, and a whole backlog held in
        # the queue is memory for nothing; refill 5 ms after a full queue, not 1 s later
        "queued.max.messages.kbytes": PREFETCH_KBYTES,
        "fetch.queue.backoff.ms": 5,
        **({"group.instance.id": settings.group_instance_id} if settings.group_instance_id else {}),
        **{k: v for k, v in settings.kafka.properties.items() if not k.startswith(_PRODUCER_ONLY)},
        **overrides,
    }


def reader_config(settings: Settings, purpose: str) -> dict[str, Any]:
    """A consumer that assigns its partitions itself (reads a topic, never joins the group,
    never commits): no static member id, a group id of its own for ``purpose``."""
    config = consumer_config(settings, **{"group.id": f"{settings.kafka.group_id}-{purpose}"})
    config.pop("group.instance.id", None)
    return config


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    """Idempotent, fully acknowledged, batched by what is queued while a request is in flight."""
    return {
        **_common(settings),
        "enable.idempotence": True,
        "acks": "all",
        # the worker produces a whole micro-batch at once: lingering for more only delays it
        # (librdkafka's 5 ms was a third of the worker's median latency); under load, records
        # queued while earlier requests are in flight still go out together
        "linger.ms": 0,
        "batch.num.messages": 10_000,
        **{k: v for k, v in settings.kafka.properties.items() if not k.startswith(_CONSUMER_ONLY)},
        **overrides,
    }


def transactional_producer_config(settings: Settings) -> dict[str, Any]:
    """One stable ``transactional.id`` per worker instance: a restarted instance fences its
    predecessor's producer and aborts its open transaction."""
    return {
        # the passthrough may override it
        "transaction.timeout.ms": settings.delivery.transaction_timeout_ms,
        **producer_config(settings, **{"transactional.id": settings.transactional_id}),
    }


def validate_timing(settings: Settings) -> None:
    """Refuse limits under which a batch or a checkpoint could outlive the broker's patience.

    A transaction stays open for up to one commit interval plus one batch; a poll comes at
    least once per batch wait plus one checkpoint. Both must fit in half of the timeouts that
    would otherwise abort the transaction or evict the consumer from its group.
    """
    consumer = consumer_config(settings)
    poll_limit = int(consumer["max.poll.interval.ms"])
    batch = settings.batch
    open_for = settings.delivery.commit_interval_ms + batch.max_wait_ms + batch.idle_wait_ms
    problems = []
    if open_for * 2 > poll_limit:
        problems.append(
            f"commit_interval_ms + batch waits = {open_for} ms must be at most half of "
            f"max.poll.interval.ms ({poll_limit} ms)"
        )
    if settings.exactly_once:
        txn_limit = int(transactional_producer_config(settings)["transaction.timeout.ms"])
        if open_for * 2 > txn_limit:
            problems.append(
                f"commit_interval_ms + batch waits = {open_for} ms must be at most half of "
                f"transaction.timeout.ms ({txn_limit} ms)"
            )
    if problems:
        raise ConfigError("; ".join(problems))


def admin_config(settings: Settings) -> dict[str, Any]:
    """With the structured logger, like every client: an admin client delivers its logs only
    when polled (see :mod:`streamapp.kafka.admin`), and never prints them raw to stderr."""
    keep = ("security.", "sasl.", "ssl.", "socket.", "client.")
    return {
        **_common(settings),
        **{k: v for k, v in settings.kafka.properties.items() if k.startswith(keep)},
    }
