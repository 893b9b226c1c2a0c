"""/healthz: alive, the loop ticks, and it makes progress (a commit, or nothing to do)."""

from __future__ import annotations

import time
from types import SimpleNamespace

from streamapp.settings import Settings
from streamapp.worker import Worker


class FakeConsumer:
    def __init__(self) -> None:
        self.lags: dict[tuple[str, int], int] = {}

    def lag(self) -> dict[tuple[str, int], int]:
        return dict(self.lags)


def worker(stall_s: float = 5.0) -> tuple[Worker, FakeConsumer, SimpleNamespace]:
    w = Worker.__new__(Worker)  # the checks need no broker and no model
    w.settings = Settings(http={"stall_s": stall_s})
    consumer, delivery = FakeConsumer(), SimpleNamespace(commits=0, pending=False)
    w._consumer, w.delivery = consumer, delivery  # type: ignore[assignment]
    w._running, w._commits_seen = True, 0
    w.last_tick = w.last_progress = time.monotonic()
    return w, consumer, delivery


def test_input_it_cannot_process_makes_the_worker_unhealthy_after_stall_s() -> None:
    w, consumer, delivery = worker()
    consumer.lags = {("features", 0): 20}  # events wait, and no commit comes
    delivery.pending = True
    w.last_progress -= 10  # the last progress was 10 s ago
    w._note_progress()
    assert w.health() == {"alive": True, "loop_ticking": True, "making_progress": False}
    delivery.commits = 1  # a commit: progress again
    w._note_progress()
    assert w.health()["making_progress"]


def test_an_idle_worker_with_nothing_to_do_is_healthy() -> None:
    w, _, _ = worker()
    w.last_progress -= 10
    w._note_progress()
    assert w.health()["making_progress"]


def test_a_loop_that_stopped_ticking_is_unhealthy() -> None:
    w, _, _ = worker()
    w.last_tick -= 10
    assert not w.health()["loop_ticking"]
