"""The scenario protocol and the event/feedback interleaver."""

from __future__ import annotations

import heapq
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import numpy as np

__all__ = ["Record", "Scenario", "scenario_task", "stream"]


class Scenario(Protocol):
    """A source dataset and a shifted target stream over the same features and classes.

    A scenario with a numeric target says so with ``task = "regression"`` (see
    :func:`scenario_task`); it has no classes and its ``y`` holds the targets.
    """

    name: str
    feature_names: list[str]
    classes: list[str]

    def source_data(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X, y)`` of the source task; ``y`` holds class indices."""
        ...

    def target_data(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(X, y, phase)`` of the target stream; ``phase`` numbers its shifts (0, 1, ...)."""
        ...


def scenario_task(scenario: object) -> str:
    """``"regression"`` for a scenario (or source) with numeric targets, else
    ``"classification"`` (the scenarios that predate the attribute are classifiers).

    >>> from streamapp.scenarios import FriedmanScenario, HyperplaneDrift
    >>> scenario_task(FriedmanScenario()), scenario_task(HyperplaneDrift())
    ('regression', 'classification')
    """
    return str(getattr(scenario, "task", "classification"))


@dataclass(frozen=True, slots=True)
class Record:
    """One message to produce: a feature event or its feedback."""

    kind: Literal["features", "feedback"]
    key: str
    value: dict[str, Any]
    ts: float


def stream(
    scenario: Scenario,
    n_events: int,
    *,
    rate: float = 1000.0,
    label_delay_s: float = 2.0,
    label_fraction: float = 1.0,
    start_ts: float | None = None,
    seed: int = 0,
    id_prefix: str = "e",
) -> Iterator[Record]:
    """Feature events at ``rate`` per second of event time, each labeled with probability
    ``label_fraction`` after a delay drawn uniformly from ``[0.5, 1.5] * label_delay_s``.

    Feedback carries the class name, or for a regression scenario the target as a JSON
    number. Records come out in timestamp order, so producing them in order is realistic.
    Event time starts at ``start_ts`` (default: now; brokers delete records older than their
    retention, so a stream stamped in the distant past can vanish before it is read).

    >>> from streamapp.scenarios import HyperplaneDrift
    >>> records = list(stream(HyperplaneDrift(seed=1), 3, rate=10, label_delay_s=0.01))
    >>> [(r.kind, r.key) for r in records]  # doctest: +NORMALIZE_WHITESPACE
    [('features', 'e0'), ('feedback', 'e0'), ('features', 'e1'), ('feedback', 'e1'),
     ('features', 'e2'), ('feedback', 'e2')]
    """
    start_ts = time.time() if start_ts is None else start_ts
    rng = np.random.default_rng(seed)
    X, y, _ = scenario.target_data(n_events)
    classes = scenario.classes
    numeric = scenario_task(scenario) == "regression"
    labeled = rng.random(n_events) < label_fraction
    delays = label_delay_s * rng.uniform(0.5, 1.5, n_events)
    pending: list[tuple[float, int, Record]] = []
    for i in range(n_events):
        ts = start_ts + i / rate
        while pending and pending[0][0] <= ts:
            yield heapq.heappop(pending)[2]
        event_id = f"{id_prefix}{i}"
        yield Record(
            "features",
            event_id,
            {"event_id": event_id, "ts": ts, "features": X[i].tolist()},
            ts,
        )
        if labeled[i]:
            label_ts = ts + float(delays[i])
            label = float(y[i]) if numeric else classes[int(y[i])]
            feedback = {"event_id": event_id, "label": label, "ts": label_ts}
            heapq.heappush(pending, (label_ts, i, Record("feedback", event_id, feedback, label_ts)))
    while pending:
        yield heapq.heappop(pending)[2]
