"""A batch held back for a registry outage is handed out again first, in order, and an
outage past its limit stops the worker with one line."""

from __future__ import annotations

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
