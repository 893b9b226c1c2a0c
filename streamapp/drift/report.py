"""A drift report, built in one call from everything it says.

The monitor measures the window (features, predictions, performance, detectors); the
pipeline knows the model, the label and event outcomes, the counters and the guard; the
worker knows which instance it is and how a challenger compares. :func:`build_report` puts
them together, so no one adds to a report after it was made.
"""

from __future__ import annotations

import logging
from typing import Any, NotRequired, TypedDict

from streamapp.conformal import ConformalSummary

__all__ = [
    "DatasetDrift",
    "DriftReport",
    "FeatureDrift",
    "PredictionDrift",
    "ReportWindow",
    "WindowMeasures",
    "WindowSections",
    "build_report",
]

logger = logging.getLogger(__name__)


# The wire record (schemas/drift-report.schema.json is the contract), typed for the code
# that reads it; the sections below the ones read by name stay plain dicts.


class FeatureDrift(TypedDict):
    name: str
    psi: float
    psi_threshold: float
    js: float
    ks: float
    ks_p_value: float
    p_value: float
    drifted: bool
    mean_shift: float
    std_ratio: float


class DatasetDrift(TypedDict):
    drifted_share: float
    drifted_features: int
    threshold_share: float
    alpha: float
    drifted: bool


class PredictionDrift(TypedDict):
    counts: dict[str, int]
    psi: float
    js: float
    p_value: float
    drifted: bool


class WindowSections(TypedDict):
    """What a window's counts say against the source profile."""

    features: list[FeatureDrift]
    dataset: DatasetDrift
    prediction: PredictionDrift


class ReportWindow(TypedDict):
    events: int
    labels: int
    started_ts: float
    first_event_ts: float | None
    last_event_ts: float | None


class WindowMeasures(WindowSections):
    """What the drift monitor measured in one window."""

    report_seq: int
    ts: float
    window: ReportWindow
    performance: dict[str, Any]  # accuracy, log loss, confusion: None before any label
    detectors: dict[str, dict[str, Any]]  # per stream: ADWIN and Page-Hinkley state
    imputed: dict[str, dict[str, int]]
    counts: dict[str, list[Any]]  # raw histograms, for merging scorers' reports


class DriftReport(WindowMeasures):
    """One window's drift report, as published on the drift topic."""

    model: dict[str, Any]
    labels: dict[str, int]
    events: dict[str, int]
    counters: dict[str, Any]
    guard: NotRequired[dict[str, Any]]
    instance: NotRequired[str]
    challenger: NotRequired[dict[str, Any]]
    conformal: NotRequired[ConformalSummary]  # the prediction sets' coverage and size


def build_report(
    window: WindowMeasures,
    *,
    model: dict[str, Any],
    labels: dict[str, int],
    events: dict[str, int],
    counters: dict[str, Any],
    guard: dict[str, Any] | None = None,
    instance: str | None = None,
    challenger: dict[str, Any] | None = None,
    conformal: ConformalSummary | None = None,
) -> DriftReport:
    """The report of one window (``window`` as :meth:`DriftMonitor.report` measured it).

    >>> report = build_report(
    ...     {"report_seq": 1},  # type: ignore[typeddict-item]
    ...     model={"name": "m"}, labels={}, events={}, counters={}, instance="w1",
    ... )
    >>> sorted(report)
    ['counters', 'events', 'instance', 'labels', 'model', 'report_seq']
    """
    report: DriftReport = {
        **window,
        "model": model,
        "labels": labels,
        "events": events,
        "counters": counters,
    }
    if guard is not None:
        report["guard"] = guard
    if instance is not None:
        report["instance"] = instance
    if challenger is not None:
        report["challenger"] = challenger
    if conformal is not None:
        report["conformal"] = conformal
    return report
