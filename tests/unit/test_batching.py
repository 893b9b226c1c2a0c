from __future__ import annotations

import pytest

from streamapp.batching import BatchPolicy


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_batch_closes_at_max_size_without_waiting() -> None:
    calls = []

    def poll(n: int, timeout: float) -> list[int]:
        calls.append((n, timeout))
        return list(range(n))

    assert len(BatchPolicy(max_size=5, max_wait_s=1.0).collect(poll, clock=Clock())) == 5
    assert calls == [(5, 1.0)]


def test_batch_closes_at_the_deadline_with_what_it_has() -> None:
    clock = Clock()

    def poll(n: int, timeout: float) -> list[int]:
        clock.now += 0.6  # each poll returns one item after 0.6 s
        return [1]

    assert BatchPolicy(max_size=100, max_wait_s=1.0).collect(poll, clock=clock) == [1, 1]


def test_an_empty_poll_ends_the_batch() -> None:
    assert BatchPolicy(max_size=10, max_wait_s=1.0).collect(lambda n, t: [], clock=Clock()) == []


def test_remaining_wait_shrinks_and_never_goes_negative() -> None:
    clock, timeouts = Clock(), []

    def poll(n: int, timeout: float) -> list[int]:
        timeouts.append(timeout)
        clock.now += 0.7
        return [1]

    BatchPolicy(max_size=10, max_wait_s=1.0).collect(poll, clock=clock)
    assert timeouts[0] == 1.0
    assert all(t >= 0 for t in timeouts)
    assert timeouts[1] == pytest.approx(0.3)


@pytest.mark.parametrize(("size", "wait"), [(0, 1.0), (1, -1.0)])
def test_invalid_policy_is_refused(size: int, wait: float) -> None:
    with pytest.raises(ValueError, match="must be"):
        BatchPolicy(size, wait)
