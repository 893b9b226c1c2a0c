"""``streamapp demo``: an embedded broker, a scenario producer and the worker, end to end.

With no bootstrap servers configured it starts a local noida-db broker; otherwise it uses
the configured cluster. Progress is shown live with rich and summed up at the end.
"""

from __future__ import annotations

import argparse
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from streamapp.drift.report import DriftReport
from streamapp.events import Outputs
from streamapp.kafka.admin import ensure_topics
from streamapp.kafka.brokers import configured_or_started
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.training import train_source_bundle
from streamapp.regression.pipeline import RegressionPipeline
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.bad import bad_messages
from streamapp.scenarios.produce import produce_records
from streamapp.settings import ModelSettings, Settings
from streamapp.worker import Worker

__all__ = ["run_demo"]

logger = logging.getLogger(__name__)


@dataclass
class _Progress:
    started: float = field(default_factory=time.monotonic)
    reports: int = 0
    feature_alarms: int = 0
    change_points: int = 0
    last_report: DriftReport | None = None
    last_render: float = 0.0


def _bundle(settings: Settings, scenario_name: str) -> Bundle:
    path = Path(settings.model.bundle)
    if not (path / "manifest.json").exists():
        logger.info("no bundle at %s: training the %s source model", path, scenario_name)
        train_source_bundle(get_scenario(scenario_name), path)
    return load_bundle(path)


def _table(worker: Worker, progress: _Progress, produced: int, done: bool) -> Table:
    pipeline = worker.pipeline
    perf = pipeline.monitor.performance.summary()
    elapsed = time.monotonic() - progress.started
    scored = pipeline.stats.events_scored
    table = Table(title="streamapp demo" + (" - done" if done else ""), show_header=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(justify="right")
    rows = [
        (
            "model",
            f"{worker.bundle.name} {worker.bundle.version} (head_seq {pipeline.head.n_learned})",
        ),
        ("records produced", f"{produced:,}"),
        ("events scored", f"{scored:,}"),
        ("events/s (wall clock)", f"{scored / elapsed:,.0f}" if elapsed > 0 else "-"),
        (
            "worker capacity (busy time)",
            f"{scored / worker.busy_s:,.0f} events/s" if worker.busy_s > 0 else "-",
        ),
        ("labels joined", f"{pipeline.ledger.counts.joined:,} (pending {len(pipeline.ledger):,})"),
        *_performance_rows(perf, isinstance(pipeline, RegressionPipeline)),
        ("drift reports", str(progress.reports)),
        ("windows with dataset drift", str(progress.feature_alarms)),
        ("ADWIN/PageHinkley change points", str(progress.change_points)),
        (
            "dead letters",
            ", ".join(f"{k} {v}" for k, v in sorted(pipeline.stats.dead_letters.items())) or "0",
        ),
    ]
    for name, value in rows:
        table.add_row(name, value)
    return table


def _performance_rows(perf: dict[str, object], regression: bool) -> list[tuple[str, str]]:
    """Accuracy of a classifier, MAE of a regression model: served and frozen source."""
    last = perf.get("labels", 0)
    if not regression:
        return [
            ("accuracy, adapted head (all labels)", _pct(perf.get("accuracy_total"))),
            ("accuracy, frozen source head (all labels)", _pct(perf.get("source_accuracy_total"))),
            (f"accuracy, adapted head (last {last})", _pct(perf.get("accuracy"))),
            (f"accuracy, frozen source head (last {last})", _pct(perf.get("source_accuracy"))),
        ]
    return [
        ("MAE, served (all labels)", _num(perf.get("mae_total"))),
        ("MAE, frozen source model (all labels)", _num(perf.get("source_mae_total"))),
        (f"MAE, served (last {last})", _num(perf.get("mae"))),
        (f"MAE, frozen source model (last {last})", _num(perf.get("source_mae"))),
    ]


def _num(value: object) -> str:
    return f"{float(value):.3f}" if isinstance(value, float) else "-"


def _pct(value: object) -> str:
    return f"{100 * float(value):.1f}%" if isinstance(value, float) else "-"


def run_demo(settings: Settings, args: argparse.Namespace) -> int:
    console = Console()
    default = ModelSettings.model_fields["bundle"].default
    if settings.model.bundle == default and args.scenario != default.parent.name:
        # another scenario's model, by default beside the default one: models/<scenario>/1
        scenario_bundle = default.parent.parent / args.scenario / "1"
        settings = settings.with_overrides(**{"model.bundle": scenario_bundle})
    with configured_or_started(settings) as (settings, _):
        ensure_topics(settings, partitions=args.partitions)
        bundle = _bundle(settings, args.scenario)
        scenario = get_scenario(args.scenario)
        run_id = f"d{int(time.time())}-"
        records = list(
            stream(
                scenario,
                args.events,
                rate=args.rate,
                label_delay_s=args.label_delay,
                label_fraction=args.label_fraction,
                id_prefix=run_id,
                start_ts=time.time(),
            )
        )
        bad = bad_messages(len(scenario.feature_names), id_prefix=run_id + "bad")
        total = len(records) + len(bad)
        produced = [0]
        stop = threading.Event()

        def feed() -> None:
            produced[0] = produce_records(settings, records, realtime=True, stop=stop)
            from confluent_kafka import Producer

            from streamapp.kafka.config import producer_config

            raw = Producer(producer_config(settings))
            for kind, key, value, _reason in bad:
                topic = settings.topics.features if kind == "features" else settings.topics.feedback
                raw.produce(topic, value, key)
            raw.flush(10)
            produced[0] += len(bad)

        progress = _Progress()

        def on_batch(worker: Worker, outputs: Outputs) -> None:
            for report in outputs.drift_reports:
                progress.reports += 1
                progress.feature_alarms += report["dataset"]["drifted"]
                progress.change_points += sum(
                    len(d["change_points"]) for d in report["detectors"].values()
                )
                progress.last_report = report
            now = time.monotonic()
            if now - progress.last_render > 0.25:
                progress.last_render = now
                live.update(_table(worker, progress, produced[0], done=False))

        producer_thread = threading.Thread(target=feed, name="scenario-producer", daemon=True)
        worker = Worker(settings, bundle, on_batch=on_batch)
        # the live table replaces per-report log lines; warnings still show
        quiet = logging.getLogger("streamapp")
        level = quiet.level
        quiet.setLevel(max(level, logging.WARNING))
        with Live(console=console, refresh_per_second=4, transient=False) as live:
            producer_thread.start()
            progress.started = time.monotonic()
            try:
                worker.run(count=total, timeout=args.events / args.rate + 120)
            finally:
                stop.set()
                worker.close()
                producer_thread.join(timeout=30)
            live.update(_table(worker, progress, produced[0], done=True))
        quiet.setLevel(level)
    return 0
