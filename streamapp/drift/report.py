"""A drift report, built in one call from everything it says.

The monitor measures the window (features, predictions, performance, detectors); the
pipeline knows the model, the label and event outcomes, the counters and the guard; the
worker knows which instance it is and how a challenger compares. :func:`build_report` puts
them together, so no one adds to a report after it was made.
"""

from __future__ import annotations

import logging
from typing import Any

__all__ = ["build_report"]

logger = logging.getLogger(__name__)


def build_report(
    window: dict[str, Any],
    *,
    model: dict[str, Any],
    labels: dict[str, int],
    events: dict[str, int],
    counters: dict[str, Any],
    guard: dict[str, Any] | None = None,
    instance: str | None = None,
    challenger: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The report of one window (``window`` as :meth:`DriftMonitor.report` measured it).

    >>> report = build_report(
    ...     {"report_seq": 1}, model={"name": "m"}, labels={}, events={}, counters={},
    ...     instance="w1",
    ... )
    >>> sorted(report)
    ['counters', 'events', 'instance', 'labels', 'model', 'report_seq']
    """
    report = {
        **window,
        "model": model,
        "labels": labels,
        "events": events,
        "counters": counters,
    }
    optional = {"guard": guard, "instance": instance, "challenger": challenger}
    report.update({key: value for key, value in optional.items() if value is not None})
    return report
