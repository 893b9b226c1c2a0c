"""Drift statistics against the source domain, detectors on the error stream, the monitor."""

from streamapp.drift.monitor import DriftMonitor
from streamapp.drift.stats import BinnedComparison, ReferenceProfile, compare_binned

__all__ = ["BinnedComparison", "DriftMonitor", "ReferenceProfile", "compare_binned"]
