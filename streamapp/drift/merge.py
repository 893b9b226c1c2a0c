"""One drift report from several scorers' reports of the same interval.

Histograms on the fixed reference bins add up, and so do class counts, first and second
moments and label counts: summing the ``counts`` section of every scorer's report and
recomputing the statistics gives the report one worker would have written had it seen
every scorer's events. Rolling accuracies (a regression model's MAE and RMSE) are merged
weighted by their label counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np

from streamapp.conformal import merge_summaries
from streamapp.drift.monitor import WindowCounts, window_sections
from streamapp.drift.stats import ReferenceProfile

__all__ = ["merge_reports"]

logger = logging.getLogger(__name__)


def merge_reports(reports: Sequence[dict[str, Any]], profile: ReferenceProfile) -> dict[str, Any]:
    """The global report of ``reports`` (one per scorer, same interval) against ``profile``."""
    if not reports:
        raise ValueError("nothing to merge")
    counts = [r["counts"] for r in reports]
    merged = WindowCounts(
        np.sum([np.asarray(c["features"], np.float64) for c in counts], axis=0),
        np.sum([np.asarray(c["predictions"], np.float64) for c in counts], axis=0),
        np.sum([np.asarray(c["sum"], np.float64) for c in counts], axis=0),
        np.sum([np.asarray(c["sumsq"], np.float64) for c in counts], axis=0),
        sum(int(r["window"]["events"]) for r in reports),
    )
    first = reports[0]
    sections = window_sections(
        profile,
        [f["name"] for f in first["features"]],
        list(first["prediction"]["counts"]),
        merged,
        float(first["dataset"]["alpha"]),
        float(first["dataset"]["threshold_share"]),
    )
    return {
        "ts": max(float(r["ts"]) for r in reports),
        "sources": len(reports),
        "window": {
            "events": merged.events,
            "labels": sum(int(r["window"]["labels"]) for r in reports),
        },
        **sections,
        "performance": _merge_performance([r["performance"] for r in reports]),
        **(
            {"conformal": merge_summaries([r["conformal"] for r in reports])}
            if all("conformal" in r for r in reports)
            else {}
        ),
    }


def _merge_performance(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """The rolling measures of several scorers weighted by their label counts: accuracies
    and MAEs as means, RMSEs as root mean squares. R² needs each window's target variance,
    which a report does not carry: it is left out."""
    labels = sum(int(p.get("labels", 0)) for p in parts)
    out: dict[str, Any] = {"labels": labels}
    for key in ("accuracy", "source_accuracy", "mae", "source_mae", "rmse", "source_rmse"):
        weighted = [(p[key], p["labels"]) for p in parts if p.get(key) is not None and p["labels"]]
        if not weighted:
            continue
        squared = key.endswith("rmse")
        total = sum((v * v if squared else v) * n for v, n in weighted) / sum(
            n for _, n in weighted
        )
        out[key] = float(np.sqrt(total)) if squared else total
    return out
