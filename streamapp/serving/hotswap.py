"""Hot swap of the served model: follow ``model-control``, load in the background, swap
between batches.

``streamapp models promote`` (or ``rollback``) moves an alias in the registry and publishes a
control event. Every worker serving that ``name@alias`` loads the version from its registry
on a background thread (the checksums and shapes are verified there) while it keeps scoring
with the old one; the poll loop then swaps the new bundle in between two batches. A bundle
that fails verification is refused: the old one keeps serving, and the refusal is logged,
counted and published on the control topic.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, fields

import orjson
from confluent_kafka import OFFSET_END, Producer

from streamapp.errors import BundleError, StreamappError
from streamapp.kafka.config import producer_config, reader_config
from streamapp.kafka.tail import PartitionTail
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.registry import ModelRef, Registry
from streamapp.settings import Settings

__all__ = ["ControlEvent", "ModelWatcher", "check_same_task", "publish_control_event"]

logger = logging.getLogger(__name__)

SWITCHING = ("promote", "rollback")


@dataclass(frozen=True, slots=True)
class ControlEvent:
    """One message of the ``model-control`` topic."""

    type: str  # promote | rollback | loaded | refused
    name: str
    version: str
    alias: str
    ts: float
    instance: str | None = None
    reason: str | None = None

    def encode(self) -> bytes:
        return orjson.dumps({k: v for k, v in asdict(self).items() if v is not None})

    @classmethod
    def decode(cls, value: bytes) -> ControlEvent:
        doc = orjson.loads(value)
        return cls(**{f.name: doc.get(f.name) for f in fields(cls)})


def _control_producer(settings: Settings) -> Producer:
    return Producer({k: v for k, v in producer_config(settings).items() if k != "logger"})


def publish_control_event(settings: Settings, event: ControlEvent) -> None:
    producer = _control_producer(settings)
    producer.produce(settings.topics.model_control, event.encode(), event.name.encode())
    if producer.flush(30) != 0:
        raise StreamappError(f"could not publish {event.type} of {event.name} to the broker")


def check_same_task(serving: str, bundle: Bundle) -> None:
    """Refuse (``BundleError``) a bundle of another task than the one served: its predictions
    have another format, which the topics' consumers and registry subjects do not expect."""
    if bundle.manifest.task != serving:
        raise BundleError(
            f"a {bundle.manifest.task} bundle cannot replace a {serving} one in place (its "
            "outputs have another format): serve it on topics of its own"
        )


class ModelWatcher:
    """Follows the control topic for ``settings.model.name@model_alias``.

    ``poll()`` (on the worker's loop) returns a loaded, verified bundle once, when a
    promotion or rollback to another version has been loaded; otherwise ``None``.
    """

    def __init__(self, settings: Settings, serving: ModelRef, task: str = "classification") -> None:
        assert settings.model.registry is not None and settings.model.name is not None
        self.settings = settings
        self.task = task  # the served bundle's: a bundle of the other task is refused
        self.registry = Registry(settings.model.registry)
        self.serving = serving
        self.refusals = 0
        self.swaps = 0
        # only what is promoted from now on: the alias was resolved at start
        self._tail = PartitionTail(
            reader_config(settings, "control"),
            settings.topics.model_control,
            start=OFFSET_END,
            name="model-watcher",
        )
        self._producer = _control_producer(settings)
        self._loading: threading.Thread | None = None
        self._loaded: Bundle | None = None

    def poll(self) -> Bundle | None:
        for msg in self._tail.poll():
            self._on_event(msg.value() or b"")
        self._producer.poll(0)
        if self._loaded is not None and self._loading is not None and not self._loading.is_alive():
            bundle, self._loaded, self._loading = self._loaded, None, None
            self.serving = ModelRef(bundle.name, bundle.version)
            self.swaps += 1
            self._announce("loaded", self.serving)
            return bundle
        return None

    def _on_event(self, value: bytes) -> None:
        try:
            event = ControlEvent.decode(value)
        except (orjson.JSONDecodeError, TypeError, AttributeError) as exc:
            logger.warning("unreadable control event %r: %s", value[:200], exc)
            return
        s = self.settings
        if (
            event.type not in SWITCHING
            or event.name != s.model.name
            or event.alias != s.model.alias
        ):
            return
        if event.version == self.serving.version:
            return
        if self._loading is not None and self._loading.is_alive():
            self._loading.join()  # the newest event wins; loads are seconds at most
        self._loaded = None
        ref = ModelRef(event.name, event.version)
        self._loading = threading.Thread(target=self._load, args=(ref,), daemon=True)
        self._loading.start()
        logger.info("loading %s in the background (%s)", ref, event.type)

    def _load(self, ref: ModelRef) -> None:
        try:
            bundle = load_bundle(self.registry.path(ref.name, ref.version))
            check_same_task(self.task, bundle)
        except StreamappError as exc:
            self.refusals += 1
            logger.error("refused %s, still serving %s: %s", ref, self.serving, exc)
            self._announce("refused", ref, reason=str(exc))
            return
        self._loaded = bundle

    def _announce(self, kind: str, ref: ModelRef, reason: str | None = None) -> None:
        event = ControlEvent(
            kind,
            ref.name,
            ref.version,
            self.settings.model.alias,
            time.time(),
            instance=self.settings.delivery.instance_id,
            reason=reason,
        )
        self._producer.produce(
            self.settings.topics.model_control, event.encode(), ref.name.encode()
        )

    def close(self) -> None:
        if self._loading is not None:
            self._loading.join(timeout=30)
        self._producer.flush(10)
        self._tail.close()
