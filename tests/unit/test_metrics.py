"""/metrics: the same families in every mode, label outcomes that add up, process metrics,
latency buckets past a minute. A fake worker stands in for the real one (read at scrape)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streamapp.ops.metrics import LABEL_OUTCOMES, WorkerMetrics


@dataclass
class Counts:
    values: dict[str, int]

    def as_dict(self) -> dict[str, int]:
        return dict(self.values)


@dataclass
class Ledger:
    counts: Counts
    event_counts: Counts
    parked: int = 0
    entries: int = 0

    def __len__(self) -> int:
        return self.entries


@dataclass
class Stats:
    batches: int = 4
    events_scored: int = 30
    feedback_received: int = 25
    redelivered: int = 0
    dead_letters: Counter[str] = field(default_factory=Counter)


@dataclass
class Head:
    n_learned: int = 0


@dataclass
class Pipeline:
    ledger: Ledger
    stats: Stats = field(default_factory=Stats)
    head: Head = field(default_factory=Head)


class Source:
    """What :class:`WorkerMetrics` reads from a worker, with the counts a test gives it."""

    messages = 55
    recoveries = 0

    def __init__(self, pipeline: Pipeline, events: dict[str, float]) -> None:
        self.pipeline = pipeline
        self.events = events

    def model_info(self) -> dict[str, str]:
        return {"name": "m", "version": "1"}

    def consumer_lag(self) -> dict[tuple[str, int], int]:
        return {}

    def event_counts(self) -> dict[str, float]:
        return self.events

    def last_drift_report(self) -> None:
        return None


def a_pipeline(**label_counts: int) -> Pipeline:
    labels = {"joined": 20, "late": 2, "orphan": 1, "duplicate": 1} | label_counts
    ledger = Ledger(Counts(labels), Counts({"expired": 3, "evicted": 5}), parked=1, entries=6)
    return Pipeline(ledger)


def samples(metrics: WorkerMetrics) -> dict[str, float]:
    """Samples by ``name{label="value",...}``."""
    out = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            out[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return out


def names(scraped: dict[str, float]) -> set[str]:
    return {key.split("{", 1)[0] for key in scraped}


def test_every_mode_exports_the_same_metrics_with_zero_where_they_do_not_apply() -> None:
    at_least_once = samples(WorkerMetrics(Source(a_pipeline(), {"commits": 7})))
    exactly_once = samples(
        WorkerMetrics(
            Source(a_pipeline(), {"commits": 7, "transaction_aborts": 2, "commit_seconds": 0.25})
        )
    )
    before_start = samples(WorkerMetrics(Source(a_pipeline(), {})))  # no checkpoint yet

    assert names(at_least_once) == names(exactly_once) == names(before_start)
    assert at_least_once["streamapp_transaction_aborts_total"] == 0
    assert exactly_once["streamapp_transaction_aborts_total"] == 2
    assert at_least_once["streamapp_commits_total"] == 7
    assert exactly_once["streamapp_commit_seconds_total"] == 0.25
    for name in (
        "commits",
        "transaction_aborts",
        "commit_seconds",
        "model_swaps",
        "model_refusals",
    ):
        assert before_start[f"streamapp_{name}_total"] == 0
    assert at_least_once["streamapp_drift_reports_total"] == 0  # before the first report


def test_label_outcomes_partition_the_labels_and_ledger_events_are_their_own_family() -> None:
    scraped = samples(WorkerMetrics(Source(a_pipeline(joined=40), {})))
    outcomes = {
        key.split('"')[1]: value
        for key, value in scraped.items()
        if key.startswith("streamapp_labels_total{")
    }
    assert outcomes == {"joined": 40, "late": 2, "orphan": 1, "duplicate": 1}
    assert sum(outcomes.values()) == 44  # a sum over outcomes counts each finished label once
    assert scraped["streamapp_labels_parked"] == 1
    assert scraped['streamapp_ledger_events_total{outcome="expired"}'] == 3
    assert scraped['streamapp_ledger_events_total{outcome="evicted"}'] == 5
    assert scraped["streamapp_ledger_entries"] == 6


def test_every_label_outcome_is_exported_from_zero() -> None:
    pipeline = a_pipeline()
    pipeline.ledger.counts = Counts({})
    pipeline.ledger.event_counts = Counts({})
    scraped = samples(WorkerMetrics(Source(pipeline, {})))
    for outcome in LABEL_OUTCOMES:
        assert scraped[f'streamapp_labels_total{{outcome="{outcome}"}}'] == 0
    assert scraped['streamapp_ledger_events_total{outcome="expired"}'] == 0


def test_redeliveries_are_counted() -> None:
    pipeline = a_pipeline()
    pipeline.stats.redelivered = 12
    scraped = samples(WorkerMetrics(Source(pipeline, {})))
    assert scraped["streamapp_events_redelivered_total"] == 12


def test_process_and_python_metrics_are_on_the_registry() -> None:
    scraped = samples(WorkerMetrics(Source(a_pipeline(), {})))
    assert scraped["process_resident_memory_bytes"] > 0
    assert scraped["process_start_time_seconds"] > 0
    assert scraped["process_open_fds"] > 0
    assert any(key.startswith("python_info{") for key in scraped)
    assert any(key.startswith("python_gc_collections_total{") for key in scraped)


@pytest.mark.parametrize("seconds", [90.0, 240.0, 1200.0])
def test_latencies_of_minutes_land_in_finite_buckets(seconds: float) -> None:
    metrics = WorkerMetrics(Source(a_pipeline(), {}))
    metrics.observe_latencies(np.array([seconds]))
    scraped = samples(metrics)
    buckets = {
        float(key.split('"')[1]): value
        for key, value in scraped.items()
        if key.startswith("streamapp_event_latency_seconds_bucket{")
    }
    finite = {bound: count for bound, count in buckets.items() if np.isfinite(bound)}
    assert max(finite) >= 3600
    # p99 can tell 90 s from 20 min: the value is in the first bound at or above it
    first = min(bound for bound in finite if bound >= seconds)
    assert finite[first] == 1
    assert all(count == 0 for bound, count in finite.items() if bound < seconds)
    assert first <= 2 * seconds
