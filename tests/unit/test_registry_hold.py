"""A batch held back for a registry outage is handed out again first, in order, and an
outage past its limit stops the worker with one line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from streamapp.codec.registry import RegistryHold, RegistryUnavailableError
from streamapp.ordering import TimestampMerger
from tests.fakes import FakeMessage


def test_unread_messages_come_out_again_first_and_in_offset_order() -> None:
    merger = TimestampMerger({"features": 0, "feedback": 1}, max_idle_s=0.0)
    merger.assign([("features", 0), ("feedback", 0)])
    msgs = [FakeMessage("features", 0, i, 1000 + i) for i in range(6)]
    labels = [FakeMessage("feedback", 0, i, 1000 + i) for i in range(3)]
    merger.add(msgs + labels)
    merger.caught_up(("features", 0))
    merger.caught_up(("feedback", 0))
    first = merger.take(5)
    merger.unread(first)
    again = merger.take(100)
    assert [(m.topic(), m.offset()) for m in again[:5]] == [(m.topic(), m.offset()) for m in first]
    assert sorted((m.topic(), m.offset()) for m in again) == sorted(
        (m.topic(), m.offset()) for m in msgs + labels
    )


def test_an_outage_past_its_limit_stops_with_one_line() -> None:
    now = [0.0]
    hold = RegistryHold(10.0, clock=lambda: now[0], sleep=lambda s: None)
    waits: list[float] = []
    hold._sleep = waits.append  # the backoff, seen
    for t in (0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0):
        now[0] = t
        hold.held([], lambda m: None, RegistryUnavailableError("down"))
    assert waits == [0.2, 0.4, 0.8, 1.6, 3.2, 5.0, 5.0]
    now[0] = 11.0
    with pytest.raises(RegistryUnavailableError, match=r"unreachable for 11 s .*outage_limit_s=10"):
        hold.held([], lambda m: None, RegistryUnavailableError("down"))


def test_a_batch_held_for_a_registry_outage_keeps_healthz_green_until_the_limit(
    digits_bundle: Path,
) -> None:
    """http.stall_s is shorter than the outage limit: a liveness probe must not restart a
    worker that is riding out a registry outage (its start would fail without a registry)."""
    from streamapp.kafka.consumer import PolledBatch
    from streamapp.model.bundle import load_bundle
    from streamapp.settings import Settings
    from streamapp.worker import Worker
    from tests.fakes import FakeBatchConsumer, FakeDelivery

    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        model={"bundle": digits_bundle},
        http={"stall_s": 5},
        schema_registry={"outage_limit_s": 60},
    )
    worker = Worker(settings, load_bundle(digits_bundle))
    now = [1000.0]
    worker.registry_hold = RegistryHold(60.0, clock=lambda: now[0], sleep=lambda s: None)
    batch = PolledBatch.of([FakeMessage("features", 0, 0, 1000)])
    consumer = FakeBatchConsumer(*[batch] * 3)
    consumer.unread = lambda messages: None  # type: ignore[attr-defined]
    consumer.lags = {("features", 0): 1}  # work waits, and nothing commits
    delivery = FakeDelivery()
    delivery.pending = True
    worker.delivery = delivery  # type: ignore[assignment]
    worker.attach(consumer, publisher=object())  # type: ignore[arg-type]
    worker.running = True

    def decode(batch: Any) -> Any:
        raise RegistryUnavailableError("schema registry: ConnectError: refused")

    worker.codec.decode_batch = decode  # type: ignore[method-assign]
    worker.step()
    worker.last_progress -= 30  # the outage has lasted well past http.stall_s...
    now[0] += 30
    worker.step()  # ...but each held batch under the limit is progress
    assert worker.health()["making_progress"]
    now[0] += 31  # past the limit: one line, the worker stops (no silent stall)
    with pytest.raises(RegistryUnavailableError, match="outage_limit_s=60"):
        worker.step()
