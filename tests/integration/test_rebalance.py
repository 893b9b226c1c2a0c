"""Two workers in one group: the work is split, and nothing is lost across the rebalance.

On Apache Kafka the first worker commits what it did in its revoke callback, so nothing is
redone. noida-db answers a commit during a rebalance with ILLEGAL_GENERATION, which
librdkafka treats as the partitions being lost: then the uncommitted tail is redone (at
least once), and the redelivered events are dead-lettered as duplicates by the worker that
already scored them.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

import pytest

from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import read_topic, second_has_not_joined, wait_caught_up, wait_until

pytestmark = pytest.mark.integration


def test_a_second_worker_joining_takes_over_partitions_and_nothing_is_lost(
    make_settings: Callable[..., Settings], group_protocol: dict[str, str]
) -> None:
    settings = make_settings(
        partitions=4,
        **{"batch.max_size": 100, "kafka.properties": group_protocol},
    )
    n = 6000
    produce_records(settings, stream(get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.5))

    # the first worker is slowed down, or it finishes before the second has joined
    first = Worker(settings, on_batch=lambda *_: second_has_not_joined(second))
    second = Worker(settings)
    threads = [threading.Thread(target=w.run, kwargs={"timeout": 60}) for w in (first, second)]
    threads[0].start()
    wait_until(lambda: first.pipeline.stats.events_scored >= 500, "first did no work")
    threads[1].start()
    wait_until(
        lambda: first.pipeline.stats.events_scored + second.pipeline.stats.events_scored >= n,
        "every event scored",
        45,
    )
    wait_caught_up(settings, timeout=30)  # a redone tail is finished (and committed) too
    for worker, thread in zip((first, second), threads, strict=True):
        worker.stop()
        thread.join()
    first.close()
    second.close()

    assert first.pipeline.stats.events_scored < n  # the work was shared
    assert second.pipeline.stats.events_scored > 0
    predictions = read_topic(settings, settings.topics.predictions, idle=3)
    counts = Counter(doc["event_id"] for _, doc in predictions)
    assert set(counts) == {f"e{i}" for i in range(n)}
    redone = sum(c - 1 for c in counts.values())
    # at most the work since the last commit (200 ms) of the moving partitions is redone
    assert redone < n // 2
