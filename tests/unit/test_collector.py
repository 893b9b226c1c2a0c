"""The worker's collector settings: start-up frozen, young objects collected less often."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator

import pytest

from streamapp.lifecycle import YOUNG_COLLECTION_THRESHOLD, tune_garbage_collector


@pytest.fixture
def collector_restored() -> Iterator[None]:
    threshold = gc.get_threshold()
    yield
    gc.unfreeze()
    gc.set_threshold(*threshold)


class _Node:
    def __init__(self) -> None:
        self.me = self  # a reference cycle: only the collector frees it


@pytest.mark.usefixtures("collector_restored")
def test_startup_objects_are_frozen_and_young_ones_collected_less_often() -> None:
    kept = [[i] for i in range(100)]  # made at start-up and kept
    older = gc.get_threshold()[1:]
    tune_garbage_collector()
    assert gc.get_threshold() == (YOUNG_COLLECTION_THRESHOLD, *older)
    assert YOUNG_COLLECTION_THRESHOLD > 700  # Python's default collects a few times a batch
    assert gc.get_freeze_count() >= len(kept)
    cycle = weakref.ref(_Node())
    gc.collect()
    assert cycle() is None  # garbage cycles made afterwards are still collected
