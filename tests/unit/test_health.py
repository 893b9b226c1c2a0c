"""/healthz: alive, the loop ticks, and it makes progress (a commit, or nothing to do)."""

from __future__ import annotations

from pathlib import Path

import pytest

from streamapp.model.bundle import load_bundle
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.fakes import FakeBatchConsumer, FakeDelivery


@pytest.fixture
def worker(digits_bundle: Path) -> tuple[Worker, FakeBatchConsumer, FakeDelivery]:
    """A running worker (as inside ``run()``) on a fake consumer and delivery: the checks
    need no broker."""
    settings = Settings(
        kafka={"bootstrap_servers": "127.0.0.1:9"},
        model={"bundle": digits_bundle},
        http={"stall_s": 5},
    )
    w = Worker(settings, load_bundle(digits_bundle))
    consumer, delivery = FakeBatchConsumer(), FakeDelivery()
    w.delivery = delivery  # type: ignore[assignment]
    w.attach(consumer, publisher=None)  # type: ignore[arg-type]  # nothing is published
    w.running = True
    return w, consumer, delivery


def test_input_it_cannot_process_makes_the_worker_unhealthy_after_stall_s(
    worker: tuple[Worker, FakeBatchConsumer, FakeDelivery],
) -> None:
    w, consumer, delivery = worker
    consumer.lags = {("features", 0): 20}  # events wait, and no commit comes
    delivery.pending = True
    w.last_progress -= 10  # the last progress was 10 s ago
    w.note_progress()
    assert w.health() == {"alive": True, "loop_ticking": True, "making_progress": False}
    delivery.commits = 1  # a commit: progress again
    w.note_progress()
    assert w.health()["making_progress"]


def test_an_idle_worker_with_nothing_to_do_is_healthy(
    worker: tuple[Worker, FakeBatchConsumer, FakeDelivery],
) -> None:
    w, _, _ = worker
    w.last_progress -= 10
    w.note_progress()
    assert w.health()["making_progress"]


def test_a_loop_that_stopped_ticking_is_unhealthy(
    worker: tuple[Worker, FakeBatchConsumer, FakeDelivery],
) -> None:
    w, _, _ = worker
    w.last_tick -= 10
    assert not w.health()["loop_ticking"]
