"""Prometheus metrics of one worker.

Counters the worker already keeps (pipeline stats, ledger label counts, checkpoint
commits, the last drift report) are read when Prometheus scrapes, so the hot loop pays
nothing for them. Histograms are observed once per batch: a batch's latencies go into
the buckets with one ``searchsorted`` instead of one call per event.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any, Protocol

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    GCCollector,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)

from streamapp.conformal import ConformalSummary
from streamapp.drift.report import DriftReport
from streamapp.events import Reason
from streamapp.guard import DECISIONS
from streamapp.pipeline import Pipeline

__all__ = ["BatchHistogram", "MetricsSource", "WorkerMetrics"]

logger = logging.getLogger(__name__)

_PREFIX = "streamapp"
BATCH_SIZE_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000)
# up to an hour: after an outage the backlog is minutes old, and p99 must not pin at a bound
SECONDS_BUCKETS = (
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
    30, 60, 120, 300, 600, 1800, 3600,
)  # fmt: skip
# outcomes that partition the labels: each label ends in exactly one (a parked one in none yet)
LABEL_OUTCOMES = ("joined", "late", "orphan", "duplicate")
# what became of scored events that never met their label
LEDGER_EVENT_OUTCOMES = ("expired", "evicted")


# the worker's event counters; each is exported from 0 in every mode (a panel or an alert on
# one that does not apply shows 0, not "no data")
_EVENT_DOCS = {
    "commits": "Checkpoints committed (transactions in exactly-once mode).",
    "transaction_aborts": "Transactions aborted (exactly-once mode only).",
    "commit_seconds": "Seconds the loop spent blocked in commits (at-least-once: flush and "
    "offset commit; exactly-once: the transaction's commit with its snapshot).",
    "model_swaps": "Model versions swapped in without a restart (with a model registry).",
    "model_refusals": "Promoted model versions refused (failed verification).",
}


class BatchHistogram:
    """A Prometheus histogram that takes a whole batch of observations at once.

    >>> h = BatchHistogram("latency_seconds", "doc", (0.1, 1.0))
    >>> h.observe_many(np.array([0.05, 0.1, 0.5, 3.0]))
    >>> [(s.labels["le"], s.value) for s in h.family().samples if s.name.endswith("_bucket")]
    [('0.1', 2.0), ('1.0', 3.0), ('+Inf', 4.0)]
    """

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self._bounds = np.asarray(buckets, np.float64)
        self._counts = np.zeros(len(buckets) + 1, np.int64)  # the last one is +Inf
        self._sum = 0.0
        self._lock = threading.Lock()  # scrapes come from the HTTP thread

    def observe_many(self, values: np.ndarray) -> None:
        if not len(values):
            return
        # a value equal to a bound belongs to that bound's bucket (le = "less or equal")
        slots = np.searchsorted(self._bounds, values, side="left")
        counts = np.bincount(slots, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(np.sum(values))

    def observe(self, value: float) -> None:
        self.observe_many(np.array([value], np.float64))

    def family(self) -> HistogramMetricFamily:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total = self._sum
        bounds = zip(self._bounds, cumulative, strict=False)  # cumulative has +Inf too
        buckets = [(str(float(b)), float(c)) for b, c in bounds]
        buckets.append(("+Inf", float(cumulative[-1])))
        return HistogramMetricFamily(
            f"{_PREFIX}_{self.name}", self.documentation, buckets=buckets, sum_value=total
        )


class MetricsSource(Protocol):
    """What the collector reads from a worker at scrape time."""

    messages: int

    @property
    def pipeline(self) -> Pipeline: ...
    @property
    def recoveries(self) -> int: ...

    def model_info(self) -> dict[str, str]: ...
    def consumer_lag(self) -> dict[tuple[str, int], int]: ...
    def event_counts(self) -> dict[str, float]: ...
    def last_drift_report(self) -> DriftReport | None: ...


class WorkerMetrics:
    """The registry ``/metrics`` serves: per-batch histograms plus a collector that reads
    ``source`` at scrape time."""

    def __init__(self, source: MetricsSource) -> None:
        self.source = source
        self.batch_size = BatchHistogram(
            "batch_size", "Input messages per batch.", BATCH_SIZE_BUCKETS
        )
        self.batch_seconds = BatchHistogram(
            "batch_seconds", "Time to decode, score, learn and publish one batch.", SECONDS_BUCKETS
        )
        self.latency_seconds = BatchHistogram(
            "event_latency_seconds",
            "Event time to prediction produced, per scored event.",
            SECONDS_BUCKETS,
        )
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)
        # process_* (RSS, CPU, fds, start time: restarts show) and python_* (version, GC)
        for standard in (ProcessCollector, PlatformCollector, GCCollector):
            standard(registry=self.registry)

    def observe_batch(self, messages: int, seconds: float) -> None:
        self.batch_size.observe(messages)
        self.batch_seconds.observe(seconds)

    def observe_latencies(self, seconds: np.ndarray) -> None:
        """Event time -> prediction produced, for each of a batch's predictions."""
        self.latency_seconds.observe_many(seconds)

    def render(self) -> bytes:
        """The Prometheus text exposition format."""
        return generate_latest(self.registry)

    # -- the collector protocol --------------------------------------------------------------

    def collect(self) -> Iterator[Metric]:
        source = self.source
        pipeline = source.pipeline
        stats = pipeline.stats
        yield _info("model", "The deployed model.", source.model_info())
        yield _counter("messages_consumed", "Input messages processed.", source.messages)
        yield _counter("events_scored", "Feature events scored.", stats.events_scored)
        yield _counter("feedback_received", "Feedback messages received.", stats.feedback_received)
        yield _counter("batches", "Batches processed.", stats.batches)
        dead = CounterMetricFamily(
            f"{_PREFIX}_dead_letters", "Inputs dead-lettered, by reason.", labels=["reason"]
        )
        # every reason from the start, so rate() and alerts see a 0 before the first one
        for reason in sorted({r.value for r in Reason} | set(stats.dead_letters)):
            dead.add_metric([reason], stats.dead_letters.get(reason, 0))
        yield dead
        yield from _ledger_metrics(pipeline)
        redelivered = stats.redelivered
        yield _counter(
            "events_redelivered",
            "Inputs read again at an offset already processed (re-emitted, not dead-lettered).",
            redelivered,
        )
        yield _gauge("ledger_entries", "Scored events waiting for a label.", len(pipeline.ledger))
        learned = pipeline.head.n_learned
        yield _counter("head_examples_learned", "Examples the head learned from.", learned)
        yield _guard_decisions(pipeline)
        candidates = getattr(pipeline, "candidates", None)  # stand-ins may have none
        yield _counter(
            "selection_switches",
            "Online model selection: switches of the serving candidate.",
            candidates.switches if candidates is not None else 0,
        )
        lag = GaugeMetricFamily(
            f"{_PREFIX}_consumer_lag",
            "Messages behind the high watermark, per assigned partition.",
            labels=["topic", "partition"],
        )
        for (topic, partition), behind in sorted(source.consumer_lag().items()):
            lag.add_metric([topic, str(partition)], behind)
        yield lag
        counts: dict[str, float] = {name: 0 for name in _EVENT_DOCS} | source.event_counts()
        for name, count in counts.items():
            yield _counter(name, _EVENT_DOCS.get(name, name.replace("_", " ")), count)
        yield from _registry_metrics(getattr(source, "registry_hold", None))
        recoveries = source.recoveries
        yield _counter("recoveries", "Restores of the last snapshot after an abort.", recoveries)
        yield self.batch_size.family()
        yield self.batch_seconds.family()
        yield self.latency_seconds.family()
        report = source.last_drift_report()
        if report is None:  # the gauges wait for a first report; the counter starts at 0
            yield _counter("drift_reports", "Drift reports published.", 0)
        else:
            yield from _drift_metrics(report)


def _registry_metrics(hold: Any) -> Iterator[Metric]:
    """The schema registry's outages as the worker rode them (a worker reading JSON only
    shows zeros). Never its URL or credentials."""
    if hold is None:
        return
    yield _gauge(
        "schema_registry_down", "1 while the schema registry cannot be reached.", hold.down
    )
    yield _counter("schema_registry_outages", "Schema registry outages begun.", hold.outages)
    yield _counter(
        "schema_registry_held_batches",
        "Batches handed back to be read again because the schema registry was away.",
        hold.holds,
    )


def _guard_decisions(pipeline: Pipeline) -> Metric:
    """The safe-adaptation guard's decisions by kind; zeros when it is off, so alerts see 0."""
    family = CounterMetricFamily(
        f"{_PREFIX}_guard_decisions",
        "Safe-adaptation guard decisions: fallback to the source model, recover, rollback.",
        labels=["decision"],
    )
    guard = getattr(pipeline, "guard", None)  # stand-ins of a pipeline may have none
    decisions = guard.decisions if guard is not None else {}
    for decision in DECISIONS:
        family.add_metric([decision], decisions.get(decision, 0))
    return family


def _ledger_metrics(pipeline: Pipeline) -> Iterator[Metric]:
    """Labels by outcome (they add up to the labels finished), and scored events by what
    became of them without a label: two units, two families."""
    ledger = pipeline.ledger
    labels = CounterMetricFamily(
        f"{_PREFIX}_labels",
        "Feedback labels by outcome: joined, late, orphan, duplicate (each label in one).",
        labels=["outcome"],
    )
    for outcome, count in ({o: 0 for o in LABEL_OUTCOMES} | ledger.counts.as_dict()).items():
        labels.add_metric([outcome], count)
    yield labels
    yield _gauge("labels_parked", "Labels waiting for their event to be scored.", ledger.parked)
    events = CounterMetricFamily(
        f"{_PREFIX}_ledger_events",
        "Scored events that left the ledger without a label: expired (TTL) or evicted (full).",
        labels=["outcome"],
    )
    gone = {o: 0 for o in LEDGER_EVENT_OUTCOMES} | ledger.event_counts.as_dict()
    for outcome, count in gone.items():
        events.add_metric([outcome], count)
    yield events


def _counter(name: str, documentation: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


def _info(name: str, documentation: str, value: dict[str, str]) -> InfoMetricFamily:
    return InfoMetricFamily(f"{_PREFIX}_{name}", documentation, value=value)


# the rolling measures of a classifier, then a regression model's (R² absent: undefined)
_ROLLING = (
    "accuracy",
    "source_accuracy",
    "macro_f1",
    "log_loss",
    "mae",
    "rmse",
    "r2",
    "source_mae",
)


def _drift_metrics(report: DriftReport) -> Iterator[Metric]:
    """Gauges of the latest drift report (see ``schemas/drift-report.schema.json``)."""
    per_feature = {
        "psi": "Population stability index of the last window, per feature.",
        "psi_threshold": "The window-size calibrated PSI threshold, per feature.",
        "js": "Jensen-Shannon divergence (bits) of the last window, per feature.",
        "drifted": "1 when the feature drifted in the last window.",
    }
    for key, documentation in per_feature.items():
        family = GaugeMetricFamily(
            f"{_PREFIX}_drift_feature_{key}", documentation, labels=["feature"]
        )
        for feature in report["features"]:
            values: dict[str, Any] = dict(feature)
            if key in values:
                family.add_metric([feature["name"]], float(values[key]))
        yield family
    dataset = report["dataset"]
    yield _gauge("drift_drifted_share", "Share of drifted features.", dataset["drifted_share"])
    yield _gauge("drift_dataset_drifted", "1 when the dataset drifted.", float(dataset["drifted"]))
    prediction = report["prediction"]
    yield _gauge("drift_prediction_psi", "PSI of the predicted classes.", prediction["psi"])
    drifted = float(prediction["drifted"])
    yield _gauge("drift_prediction_drifted", "1 when predictions drifted.", drifted)
    yield _counter("drift_reports", "Drift reports published.", report["report_seq"])
    performance = report["performance"]
    for key in _ROLLING:
        if key in performance:
            documentation = f"Rolling {key.replace('_', ' ')} on delayed labels."
            yield _gauge(f"rolling_{key}", documentation, performance[key])
    if "residual" in performance:  # a regression model's bias
        residual = performance["residual"]
        yield _gauge(
            "rolling_residual_mean", "Rolling mean residual (served - true).", residual["mean"]
        )
        yield _gauge(
            "residual_drifted", "1 when the residual mean is not zero.", residual["drifted"]
        )
    changes = CounterMetricFamily(
        f"{_PREFIX}_drift_change_points", "Change points on the error stream.", labels=["detector"]
    )
    yield _imputed_metric(report)
    for detector, summary in report["detectors"].items():
        changes.add_metric([detector], summary["total"])
    yield changes
    if "conformal" in report:
        yield from _conformal_metrics(report["conformal"])


def _conformal_metrics(conformal: ConformalSummary) -> Iterator[Metric]:
    """The prediction sets' empirical coverage and mean size, recent and since start."""
    yield _gauge(
        "conformal_coverage_target", "Target coverage of the sets.", conformal["coverage_target"]
    )
    described = {
        "coverage": "Share of joined labels inside their served prediction set.",
        "mean_size": "Mean number of classes in the served prediction sets (a regression "
        "model's: mean interval width).",
    }
    for key, documentation in described.items():
        family = GaugeMetricFamily(f"{_PREFIX}_conformal_{key}", documentation, labels=["window"])
        for window in ("recent", "since_start"):
            value = conformal[window][key]  # type: ignore[literal-required]
            # NaN before any label: the series exists from the first report, with a gap
            family.add_metric([window], math.nan if value is None else float(value))
        yield family


def _imputed_metric(report: DriftReport) -> CounterMetricFamily:
    """Missing values replaced by the source mean (``missing=impute``) since start, per feature
    (the last report's running total)."""
    imputed = CounterMetricFamily(
        f"{_PREFIX}_imputed_values",
        "Missing feature values imputed with the source mean (missing=impute).",
        labels=["feature"],
    )
    for feature, count in report.get("imputed", {}).get("total", {}).items():
        imputed.add_metric([feature], count)
    return imputed
