"""Which broker the tests and the benchmarks start: Apache Kafka when Java can run it,
noida-db (the demo's zero-setup broker) otherwise, or an external cluster.

``STREAMAPP_TEST_BROKER`` (``kafka`` or ``noida``) picks one explicitly; without it, Apache
Kafka is chosen when Java is there and its jars are cached or Maven can resolve them. Under
CI (``CI`` set) a missing Java or Maven is an error, never a silent fallback.

>>> choose_broker({"STREAMAPP_TEST_BROKER": "noida"}).kind
'noida'
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

from streamapp.errors import BrokerError
from streamapp.kafka.apache import DEFAULT_HOME, KAFKA_VERSION, ApacheKafka, java_missing
from streamapp.kafka.local_broker import LocalBroker
from streamapp.settings import Settings

__all__ = [
    "EXTERNAL_ENV",
    "Broker",
    "BrokerChoice",
    "BrokerKind",
    "choose_broker",
    "configured_or_started",
    "start_broker",
]

logger = logging.getLogger(__name__)

BrokerKind = Literal["kafka", "noida"]
BROKER_ENV = "STREAMAPP_TEST_BROKER"
EXTERNAL_ENV = "STREAMAPP_TEST_BOOTSTRAP"  # the tests' own cluster, started by the user


def under_ci(env: Mapping[str, str]) -> bool:
    """``CI`` set to anything but an explicit no.

    >>> under_ci({"CI": "true"}), under_ci({"CI": "false"}), under_ci({})
    (True, False, False)
    """
    return env.get("CI", "").strip().lower() not in ("", "0", "false", "no")


class Broker(Protocol):
    """What a test or a benchmark does with a broker it started."""

    @property
    def bootstrap_servers(self) -> str: ...
    @property
    def name(self) -> str: ...
    def start(self) -> Broker: ...
    def stop(self, kill: bool = False) -> None: ...
    def close(self) -> None: ...


@dataclass(frozen=True)
class BrokerChoice:
    kind: BrokerKind
    why: str  # one line: what was chosen and, for a fallback, why


def choose_broker(env: Mapping[str, str] | None = None) -> BrokerChoice:
    """The broker to start, from ``env`` (``os.environ`` by default).

    Raises :class:`~streamapp.errors.BrokerError` under CI when Apache Kafka cannot run.
    """
    env = os.environ if env is None else env
    asked = env.get(BROKER_ENV, "").strip().lower()
    if asked in ("noida", "noida-db", "embedded"):
        return BrokerChoice("noida", f"{BROKER_ENV}={asked}: tests run on noida-db")
    if asked not in ("", "kafka", "apache"):
        raise BrokerError(f"{BROKER_ENV}={asked!r}: expected 'kafka' or 'noida'")
    missing = java_missing()
    cached = (DEFAULT_HOME.resolve() / KAFKA_VERSION / "lib" / ".complete").exists()
    if missing is None and not cached and shutil.which("mvn") is None:
        missing = "no mvn on PATH to resolve the Apache Kafka jars"
    if missing is None:
        return BrokerChoice("kafka", f"tests run on Apache Kafka {KAFKA_VERSION}")
    if asked or under_ci(env):
        raise BrokerError(f"Apache Kafka {KAFKA_VERSION} cannot run here: {missing}")
    return BrokerChoice("noida", f"{missing}: tests run on noida-db instead of Apache Kafka")


def start_broker(kind: BrokerKind, data_dir: Path | None = None) -> Broker:
    """A started one-node broker of ``kind``, on free loopback ports; ``stop`` then ``start``
    brings it back on the same port and data."""
    broker: Broker = ApacheKafka(data_dir=data_dir) if kind == "kafka" else LocalBroker(data_dir)
    return broker.start()


@contextlib.contextmanager
def configured_or_started(
    settings: Settings, kind: BrokerKind | None = "noida"
) -> Iterator[tuple[Settings, str]]:
    """``settings`` and the name of the broker they reach: the configured cluster when
    bootstrap servers are set; otherwise a broker of ``kind`` started for the block
    (``None``: as :func:`choose_broker` says)."""
    if settings.kafka.bootstrap_servers:
        yield settings, f"the cluster at {settings.kafka.bootstrap_servers}"
        return
    if kind is None:
        choice = choose_broker()
        logger.info("%s", choice.why)
        kind = choice.kind
    broker = start_broker(kind)
    try:
        logger.info("%s on %s", broker.name, broker.bootstrap_servers)
        yield (
            settings.with_overrides(
                **{
                    "kafka.bootstrap_servers": broker.bootstrap_servers,
                    "kafka.properties": {"session.timeout.ms": "6000", **settings.kafka.properties},
                }
            ),
            f"{broker.name}, started on this machine",
        )
    finally:
        broker.close()
