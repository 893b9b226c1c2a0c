"""Topic creation and checks."""

from __future__ import annotations

import logging
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Literal

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewPartitions, NewTopic

from streamapp.errors import BrokerError
from streamapp.kafka.config import admin_config
from streamapp.settings import Settings

__all__ = ["BrokerProbe", "Role", "TopicSpec", "ensure_topics", "partition_counts", "topic_specs"]

logger = logging.getLogger(__name__)


Role = Literal["all", "scorer", "learner", "producer"]


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic to create: name, partition count (``None``: the requested one), config."""

    name: str
    partitions: int | None = None
    config: dict[str, str] = field(default_factory=dict)


def topic_specs(settings: Settings, role: Role | None = None) -> list[TopicSpec]:
    """The topics ``role`` uses with ``settings``' features enabled (``None``: every topic).

    A single worker (``all``) uses its inputs and outputs; the learning-state topic only in
    exactly-once mode, ``model-control`` only with a registry, ``shadow-predictions`` only
    with a challenger; ``training-examples``/``model-updates`` only when scorer and learner
    run apart. A producer needs the inputs.

    >>> names = [t.name for t in topic_specs(Settings(), "all")]
    >>> names
    ['features', 'feedback', 'predictions', 'drift', 'dead-letter']
    """
    topics = settings.topics
    specs = [TopicSpec(name) for name in topics.inputs()]
    if role == "producer":
        return specs
    if role in (None, "all", "scorer"):
        specs += [TopicSpec(name) for name in topics.outputs()]
    if role is None or settings.challenger.enabled:
        specs.append(TopicSpec(topics.shadow_predictions))
    if role is None or settings.exactly_once:
        # learning-state snapshots: compacted, the latest per key is all that matters
        specs.append(TopicSpec(topics.state, 1, {"cleanup.policy": "compact"}))
    if role is None or settings.model.registry is not None:
        # model lifecycle events: one partition, so every worker sees them in one order
        specs.append(TopicSpec(topics.model_control, 1))
    if role in (None, "scorer", "learner"):
        # one learner reads every example in one order; the latest head per model is kept
        specs.append(TopicSpec(topics.training_examples, 1))
        specs.append(TopicSpec(topics.model_updates, 1, {"cleanup.policy": "compact"}))
    if role == "learner":  # the learner reads no inputs
        specs = [s for s in specs if s.name not in topics.inputs()]
    return specs


def ensure_topics(
    settings: Settings,
    partitions: int = 1,
    replication_factor: int = 1,
    timeout: float = 30.0,
    *,
    role: Role | None = None,
    grow: bool = False,
) -> list[str]:
    """Create the topics ``role`` uses (default: all of them) if missing. ``features`` and
    ``feedback`` get the same partition count, so a label lands in the same partition number
    as its event. Returns one line per existing topic with fewer partitions than asked; with
    ``grow`` those get more partitions instead."""
    admin = AdminClient(admin_config(settings))
    try:
        specs = topic_specs(settings, role)
        _create_topics(admin, specs, partitions, replication_factor, timeout)
        return _check_partitions(admin, settings, specs, partitions, grow, timeout)
    finally:
        admin.poll(0)  # hands the client's queued logs to the logger


def _create_topics(
    admin: AdminClient,
    specs: list[TopicSpec],
    partitions: int,
    replication_factor: int,
    timeout: float,
) -> None:
    wanted = [
        NewTopic(s.name, s.partitions or partitions, replication_factor, config=s.config)
        for s in specs
    ]
    for name, future in admin.create_topics(wanted, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
            logger.info("created topic %s", name)
        except KafkaException as exc:
            if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                raise BrokerError(f"cannot create topic {name}: {exc}") from exc


def _check_partitions(
    admin: AdminClient,
    settings: Settings,
    specs: list[TopicSpec],
    partitions: int,
    grow: bool,
    timeout: float,
) -> list[str]:
    """Lines for the topics with fewer partitions than asked (grown with ``grow``)."""
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach {settings.kafka.bootstrap_servers}: {exc}") from exc
    short = {
        s.name: len(metadata.topics[s.name].partitions)
        for s in specs
        if s.partitions is None
        and s.name in metadata.topics
        and len(metadata.topics[s.name].partitions) < partitions
    }
    if not short:
        return []
    if not grow:
        return [
            f"{name} has {count} partition(s), {partitions} asked: unchanged "
            f"(--grow adds partitions)"
            for name, count in short.items()
        ]
    new = [NewPartitions(name, partitions) for name in short]
    for name, future in admin.create_partitions(new, operation_timeout=timeout).items():
        try:
            future.result(timeout=timeout)
        except KafkaException as exc:
            raise BrokerError(f"cannot add partitions to {name}: {exc}") from exc
    notes = [f"{name}: {count} -> {partitions} partitions" for name, count in short.items()]
    if set(short) & set(settings.topics.inputs()):
        notes.append(
            "warning: keys written before the change now hash to other partitions; a label "
            "produced after it may miss its event's worker (co-partitioning holds only for "
            "records written after both input topics grew)"
        )
    return notes


class BrokerProbe:
    """Answers "is the broker reachable?" for ``/readyz`` at once, from state a thread of its
    own refreshes every ``interval_s`` with a metadata request (``timeout_s``).

    The probe has a client of its own (calls into the worker's consumer from another thread
    can wait on a rebalance for seconds), and its thread also hands that client's logs to the
    structured logger. A result older than ``stale_s`` counts as unreachable, so a wedged
    probe cannot keep a worker ready. The thread ends with :meth:`close`, or when the probe
    is garbage collected.
    """

    def __init__(
        self,
        settings: Settings,
        interval_s: float = 1.0,
        timeout_s: float = 2.0,
        stale_s: float | None = None,
    ) -> None:
        self._admin = AdminClient(admin_config(settings))
        self.interval_s = interval_s
        self.timeout_s = timeout_s
        self.stale_s = stale_s if stale_s is not None else 2 * interval_s + timeout_s
        self._ok_at: float | None = None  # monotonic time of the last successful request
        self.refreshes = 0
        self._stop = threading.Event()
        weakref.finalize(self, self._stop.set)
        self._thread = threading.Thread(
            target=_refresh_loop,
            args=(weakref.ref(self), self._stop),  # a weak reference: the thread dies with us
            name="streamapp-broker-probe",
            daemon=True,
        )
        self._thread.start()

    def reachable(self) -> bool:
        ok_at = self._ok_at
        return ok_at is not None and time.monotonic() - ok_at <= self.stale_s

    def refresh(self) -> bool:
        """One metadata request; returns whether it succeeded."""
        self.refreshes += 1
        try:
            self._admin.list_topics(timeout=self.timeout_s)
        except KafkaException:
            self._ok_at = None  # not ready from the first failure, not after ``stale_s``
            return False
        finally:
            self._admin.poll(0)
        self._ok_at = time.monotonic()
        return True

    def close(self, timeout: float | None = None) -> None:
        self._stop.set()
        self._thread.join(timeout if timeout is not None else self.timeout_s + 1.0)


def _refresh_loop(probe_ref: weakref.ref[BrokerProbe], stop: threading.Event) -> None:
    while not stop.is_set():
        probe = probe_ref()
        if probe is None:
            return
        started = time.monotonic()
        probe.refresh()
        wait = max(0.0, probe.interval_s - (time.monotonic() - started))
        del probe  # hold no reference while waiting
        stop.wait(wait)


def partition_counts(settings: Settings, names: list[str], timeout: float = 10.0) -> dict[str, int]:
    """Partition count of each existing topic in ``names``."""
    admin = AdminClient(admin_config(settings))
    try:
        metadata = admin.list_topics(timeout=timeout)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach {settings.kafka.bootstrap_servers}: {exc}") from exc
    finally:
        admin.poll(0)  # hands the client's queued logs to the logger
    return {
        name: len(metadata.topics[name].partitions)
        for name in names
        if name in metadata.topics and metadata.topics[name].error is None
    }
