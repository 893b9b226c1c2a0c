"""Followers of rarely written topics (the learner's heads, model promotions) read what is new
without a fetch open all the time.

noida-db answers a fetch at the end of a partition at once, so an idle assigned consumer asks
thousands of times a second (0.37 of a core of the broker's and 0.44 of its client's, measured
here); a scorer's head follower was one, on every scorer, for as long as it ran."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END

from streamapp.kafka.config import reader_config
from streamapp.kafka.tail import PartitionTail
from streamapp.roles import head_updates
from streamapp.roles.head_updates import HeadFollower, HeadSnapshot
from tests.conftest import produce_raw, wait_until

IDLE_S = 2.0


def _fetches(stats: list[dict[str, Any]]) -> int:
    last = stats[-1]
    return sum((broker.get("req") or {}).get("Fetch", 0) for broker in last["brokers"].values())


def _snapshot(head_seq: int) -> HeadSnapshot:
    return HeadSnapshot("digits", "1", head_seq, {"coef": [[0.0]]}, {}, 0.0)


def _newer_heads(follower: HeadFollower, heads: list[HeadSnapshot], count: int) -> bool:
    if (head := follower.poll()) is not None:
        heads.append(head)
    return len(heads) >= count


def test_an_idle_head_follower_does_not_keep_fetching(
    make_settings: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    stats: list[dict[str, Any]] = []

    def with_stats(s: Any, purpose: str) -> dict[str, Any]:
        return {
            **reader_config(s, purpose),
            "statistics.interval.ms": 100,
            "stats_cb": lambda blob: stats.append(json.loads(blob)),
        }

    monkeypatch.setattr(head_updates, "reader_config", with_stats)
    topic = settings.topics.model_updates
    produce_raw(settings, [(topic, b"digits", _snapshot(1).encode())])
    follower = HeadFollower(settings, "digits", "1")
    try:
        heads: list[HeadSnapshot] = []
        wait_until(lambda: _newer_heads(follower, heads, 1), "head 1")
        assert [h.head_seq for h in heads] == [1]

        wait_until(lambda: len(stats) >= 2, "statistics")
        before, started = _fetches(stats), time.monotonic()
        while time.monotonic() - started < IDLE_S:
            assert follower.poll() is None
            time.sleep(0.05)  # the scenario: a follower polled, idle, for IDLE_S
        idle_fetches = _fetches(stats) - before
        # assigned and caught up, it asked noida-db ~12,000 times a second
        assert idle_fetches < 20, f"{idle_fetches} fetches in {IDLE_S} s of nothing new"

        produce_raw(settings, [(topic, b"digits", _snapshot(2).encode())])
        wait_until(lambda: _newer_heads(follower, heads, 2), "head 2")
        assert [h.head_seq for h in heads] == [1, 2]
    finally:
        follower.close()


def test_a_tail_from_the_end_reads_only_what_comes_after_it(
    make_settings: Callable[..., Any],
) -> None:
    settings = make_settings()
    topic = settings.topics.model_control
    produce_raw(settings, [(topic, b"k", b"old-1"), (topic, b"k", b"old-2")])
    from_end = PartitionTail(
        reader_config(settings, "t-end"), topic, start=OFFSET_END, interval_s=0.1
    )
    from_start = PartitionTail(
        reader_config(settings, "t-start"), topic, start=OFFSET_BEGINNING, interval_s=0.1
    )
    try:
        produce_raw(settings, [(topic, b"k", b"new-1"), (topic, b"k", b"new-2")])
        seen_end: list[bytes] = []
        seen_start: list[bytes] = []

        def both_read() -> bool:
            seen_end.extend(m.value() for m in from_end.poll())
            seen_start.extend(m.value() for m in from_start.poll())
            return len(seen_end) >= 2 and len(seen_start) >= 4

        wait_until(both_read, "the tails")
        time.sleep(0.3)  # a quiet spell, to see that nothing is read twice: no event to await
        seen_end.extend(m.value() for m in from_end.poll())
        seen_start.extend(m.value() for m in from_start.poll())
        assert seen_end == [b"new-1", b"new-2"]
        assert seen_start == [b"old-1", b"old-2", b"new-1", b"new-2"]
    finally:
        from_end.close()
        from_start.close()
