from __future__ import annotations

import pytest

from streamapp.batching import BatchPolicy
from tests.fakes import FakeClock


def test_batch_closes_at_max_size_without_waiting() -> None:
    calls = []

    def poll(n: int, timeout: float) -> list[int]:
        calls.append((n, timeout))
        return list(range(n))

    assert len(BatchPolicy(max_size=5, max_wait_s=1.0).collect(poll, clock=FakeClock())) == 5
    assert calls == [(5, 0.1)]


def test_an_idle_loop_waits_idle_wait_for_the_first_message() -> None:
    timeouts: list[float] = []

    def poll(n: int, timeout: float) -> list[int]:
        timeouts.append(timeout)
        return []

    assert BatchPolicy(max_size=10, idle_wait_s=0.25).collect(poll, clock=FakeClock()) == []
    assert timeouts == [0.25]


def test_without_max_wait_a_batch_is_what_has_arrived() -> None:
    # low load: one message is there, the next poll finds nothing, the batch goes at once
    chunks, timeouts = [[1], []], []

    def poll(n: int, timeout: float) -> list[int]:
        timeouts.append(timeout)
        return chunks.pop(0)

    assert BatchPolicy(max_size=100).collect(poll, clock=FakeClock()) == [1]
    assert timeouts == [0.1, 0.0]


def test_under_load_batches_grow_to_max_size() -> None:
    backlog = list(range(1000))

    def poll(n: int, timeout: float) -> list[int]:
        got, backlog[:] = backlog[: min(n, 64)], backlog[min(n, 64) :]
        return got

    policy = BatchPolicy(max_size=300)
    assert [len(policy.collect(poll, clock=FakeClock())) for _ in range(4)] == [300, 300, 300, 100]


def test_an_open_batch_waits_at_most_max_wait() -> None:
    clock, timeouts = FakeClock(), []

    def poll(n: int, timeout: float) -> list[int]:
        timeouts.append(timeout)
        if timeout == 0:
            return []  # nothing is there right now
        clock.now += 0.7  # each waiting poll returns one item after 0.7 s
        return [1]

    assert BatchPolicy(max_size=10, max_wait_s=1.0).collect(poll, clock=clock) == [1, 1, 1]
    assert timeouts[1] == pytest.approx(1.0)
    assert timeouts[2] == pytest.approx(0.3)


@pytest.mark.parametrize(("size", "wait"), [(0, 1.0), (1, -1.0)])
def test_invalid_policy_is_refused(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        BatchPolicy(size, wait)
