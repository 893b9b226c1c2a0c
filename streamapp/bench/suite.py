"""``streamapp bench``: every suite in one run against one broker; JSON + a markdown table.

Only ratios within one run mean something: the broker, the producer and the loops share
this machine's cores, and absolute numbers move from run to run.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import torch

from streamapp.bench.common import Backlog, ensure_bundle, machine, output_rate, run_order
from streamapp.bench.delivery import measure_delivery
from streamapp.bench.formats import measure_formats
from streamapp.bench.heavy import LAYERS as HEAVY_LAYERS
from streamapp.bench.heavy import measure_heavy
from streamapp.bench.latency import ONE_HOP, RELAY, measure_latency
from streamapp.bench.latency import WORKER as THROUGH_WORKER
from streamapp.bench.learning import measure_learning
from streamapp.bench.loops import (
    faust_agent,
    faust_runtime,
    minimal_loop,
    passthrough,
    quix_peer,
    run_worker,
)
from streamapp.bench.memory import measure_memory
from streamapp.bench.profile import measure_profile
from streamapp.bench.scaleout import measure_scale_out, scorer_name
from streamapp.bench.tasks import measure_tasks
from streamapp.bench.variants import bundle_with_onnx, measure_variants
from streamapp.kafka.brokers import BrokerKind, configured_or_started
from streamapp.settings import Settings

__all__ = ["SUITES", "render_markdown", "run_bench", "run_order"]

logger = logging.getLogger(__name__)

SUITES = (
    "throughput",
    "latency",
    "learning",
    "profile",
    "variants",
    "memory",
    "delivery",
    "scaleout",
    "heavy",
    "formats",
    "tasks",
)
DEFAULT_SUITES = ("throughput", "latency", "learning", "profile", "variants", "memory")

WORKER = "streamapp worker"
QUIX = "quix per-message app, numpy"
LARGE_BATCH = 2000  # the throughput suite's row with a larger batch.max_size
MINIMAL = "minimal batched loop"
# the loops the targets compare, run ``repeat`` times each (alternating) and reported as medians
REPEATED = {MINIMAL, QUIX, WORKER}


def run_bench(
    settings: Settings,
    suites: tuple[str, ...] = DEFAULT_SUITES,
    *,
    events: int = 20_000,
    loads: tuple[int, ...] = (1000, 2000, 5000),
    latency_seconds: float = 10.0,
    memory_events: int = 1_000_000,
    repeat: int = 3,
    scorers: tuple[int, ...] = (1, 2),
    heavy_events: int = 4000,
    heavy_layers: tuple[int, ...] = HEAVY_LAYERS,
    out: Path | None = None,
    broker: BrokerKind | None = None,
) -> dict[str, Any]:
    """Every suite of ``suites`` on one broker: the configured cluster, else one of kind
    ``broker`` started for the run (``None``: Apache Kafka where Java runs it)."""
    result: dict[str, Any] = {"machine": machine(), "started": time.strftime("%Y-%m-%d %H:%M")}
    with configured_or_started(settings, broker) as (settings, broker_name):
        bundle = ensure_bundle(settings)
        result["broker"] = broker_name
        if "throughput" in suites:
            result["throughput"] = _throughput(settings, bundle, events, repeat)
        if "latency" in suites:
            result["latency"] = measure_latency(
                _fresh(settings, "latency"), list(loads), latency_seconds
            )
        if "learning" in suites:
            result["learning_labels_per_s"] = round(measure_learning(settings))
        if "profile" in suites:
            result["profile"] = measure_profile(settings, events, repeat)
        if "variants" in suites:
            result["variants"] = measure_variants(bundle)
        if "memory" in suites:
            result["memory"] = measure_memory(_fresh(settings, "memory"), memory_events)
        if "delivery" in suites:
            result["delivery"] = measure_delivery(settings, events, repeat)
        if "scaleout" in suites:
            result["scaleout"] = measure_scale_out(settings, events, scorers)
        if "heavy" in suites:
            with tempfile.TemporaryDirectory(prefix="streamapp-heavy-") as workdir:
                result["heavy"] = measure_heavy(settings, Path(workdir), heavy_events, heavy_layers)
        if "formats" in suites:
            result["formats"] = measure_formats(settings, events, repeat)
        if "tasks" in suites:
            result["tasks"] = measure_tasks(settings, events, repeat)
    result["targets"] = _targets(result)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "bench.json").write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
        (out / "bench.md").write_text(render_markdown(result))
    return result


def _fresh(settings: Settings, name: str) -> Settings:
    """Settings on input and output topics and a group of their own."""
    return Backlog(settings, name).for_loop(name)


def _throughput(settings: Settings, bundle: Path, events: int, repeat: int) -> dict[str, Any]:
    backlog = Backlog(settings).fill(events)
    messages = backlog.messages
    with tempfile.TemporaryDirectory(prefix="streamapp-bench-") as workdir:
        onnx_bundle = bundle_with_onnx(bundle, Path(workdir))
        loops: list[tuple[str, dict[str, Any], int, Callable[[Settings], object]]] = [
            ("passthrough", {}, messages, lambda s: passthrough(s, messages)),
            (
                MINIMAL,
                {},
                events,
                lambda s: minimal_loop(s, messages, s.batch.max_size),
            ),
            ("naive per-event loop", {}, events, lambda s: minimal_loop(s, messages, 1)),
            ("faust per-event agent", {}, events, lambda s: faust_agent(s, events)),
            (QUIX, {}, events, lambda s: quix_peer(s, events, "numpy")),
            (WORKER, {}, events, lambda s: run_worker(s, messages)),
            (
                f"{WORKER}, head only",  # finetune.layers=0: scikit-learn SGD on the embedding
                {"finetune.layers": 0},
                events,
                lambda s: run_worker(s, messages),
            ),
            (
                # the cost of a batch's fixed work, against larger windows and a staler head
                f"{WORKER}, batches of {LARGE_BATCH}",
                {"batch.max_size": LARGE_BATCH},
                events,
                lambda s: run_worker(s, messages),
            ),
            (f"{WORKER}, faust runtime", {}, events, lambda s: faust_runtime(s, events)),
            # int8 and onnx run on the CPU only: with --device cuda they would refuse to load
            (
                f"{WORKER}, int8 backbone",
                {"model.variant": "int8", "model.device": "cpu", "model.half": False},
                events,
                lambda s: run_worker(s, messages),
            ),
            (
                f"{WORKER}, onnx backbone",
                {
                    "model.variant": "onnx",
                    "model.bundle": onnx_bundle,
                    "model.device": "cpu",
                    "model.half": False,
                },
                events,
                lambda s: run_worker(s, messages),
            ),
        ]
        if settings.model.device != "cuda" and torch.cuda.is_available():
            on_gpu = {"model.device": "cuda"}
            run_gpu: Callable[[Settings], object] = lambda s: run_worker(s, messages)  # noqa: E731
            loops.append((f"{WORKER}, device=cuda", on_gpu, events, run_gpu))
        by_name = {loop[0]: loop for loop in loops}
        runs: dict[str, list[int]] = {}
        skipped: set[str] = set()  # faust-streaming or the peers' virtualenv is not installed
        for index, name in enumerate(run_order(list(by_name), REPEATED, repeat)):
            if name in skipped:
                continue
            _, overrides, outputs, run = by_name[name]
            loop_settings = backlog.for_loop(name.split()[0] + str(index), **overrides)
            if run(loop_settings) is False:
                skipped.add(name)
                continue
            rate = output_rate(loop_settings, loop_settings.topics.predictions, outputs, events)
            runs.setdefault(name, []).append(round(rate))
            logger.info("%s: %s events/s", name, f"{round(rate):,}")
    rates = {name: round(statistics.median(values)) for name, values in runs.items()}
    worker = rates[WORKER]
    return {
        "events": events,
        "input_messages": messages,
        "events_per_second": rates,  # the median of the runs
        "runs": {name: values for name, values in runs.items() if name in REPEATED},
        "worker_over": {name: round(worker / rate, 3) for name, rate in rates.items()},
    }


def _targets(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The goals of the performance issue, met or not, from this run's numbers."""
    targets: dict[str, dict[str, Any]] = {}

    def target(name: str, value: float, met: bool) -> None:
        targets[name] = {"value": value, "met": met}

    ratios = result.get("throughput", {}).get("worker_over", {})
    if MINIMAL in ratios:
        value = ratios[MINIMAL]
        target("worker >= 0.5x minimal batched loop", value, value >= 0.5)
    if QUIX in ratios:
        target("worker >= 2.5x Quix per-message numpy app", ratios[QUIX], ratios[QUIX] >= 2.5)
    hop, worker = _level(result, ONE_HOP, 2000), _level(result, THROUGH_WORKER, 2000)
    if hop and worker:
        added = round(worker["p50_ms"] - hop["p50_ms"], 1)
        target("worker adds <= 3 ms p50 over one hop at 2k events/s", added, added <= 3)
        tail = round(worker["p99_ms"] / max(hop["p99_ms"], 1e-3), 2)
        target("worker p99 <= 3x one-hop p99 at 2k events/s", tail, tail <= 3)
    delivery = result.get("delivery")
    if delivery:
        value = delivery["exactly_once_over_at_least_once"]
        target("exactly-once >= 0.9x at-least-once", value, value >= 0.9)
    if "learning_labels_per_s" in result:
        value = result["learning_labels_per_s"]
        target(">= 50k labels/s learning", value, value >= 50_000)
    scaled = result.get("scaleout", {}).get("events_per_second", {})
    one, four = scaled.get(scorer_name(1)), scaled.get(scorer_name(4))
    if one and four:  # the target is for 8 cores or more; bench.md's first line says how many
        value = round(four / one, 2)
        target("4 scorers >= 3.2x one scorer (8+ cores)", value, value >= 3.2)
    growth = result.get("memory", {}).get("steady_growth")
    if growth is not None:
        target("RSS flat (+-10%) with the ledger at its bound", growth, abs(growth) <= 0.10)
    heavy = result.get("heavy", {}).get("worker_over_backbone")
    if heavy is not None:
        target("heavy backbone: worker >= 0.8x the backbone's rows/s (CPU)", heavy, heavy >= 0.8)
    return targets


def _level(result: dict[str, Any], path: str, load: int) -> dict[str, Any] | None:
    """The latency level of ``path`` at ``load`` events/s, if it delivered predictions."""
    for level in result.get("latency", []):
        if level["path"] == path and level["offered_per_s"] == load and "p50_ms" in level:
            return level
    return None


def _against_relay(result: dict[str, Any]) -> list[str]:
    """What the worker adds over two hops through a plain relay (same broker, same load)."""
    lines: list[str] = []
    for load in dict.fromkeys(level["offered_per_s"] for level in result.get("latency", [])):
        relay, worker = _level(result, RELAY, load), _level(result, THROUGH_WORKER, load)
        if relay and worker:
            tail = worker["p99_ms"] / max(relay["p99_ms"], 1e-3)
            lines.append(
                f"At {load:,} events/s the worker adds {worker['p50_ms'] - relay['p50_ms']:+.1f} "
                f"ms at p50 over the plain relay's two hops; its p99 is {tail:.2f}x the "
                f"relay's ({worker['p99_ms']} vs {relay['p99_ms']} ms)."
            )
    return [" ".join(lines), ""] if lines else []


def _profile_lines(profile: dict[str, Any]) -> list[str]:
    """The in-process CPU per event, part by part, of the minimal loop's work and the worker's."""

    def parts(us: dict[str, float]) -> str:
        named = " + ".join(f"{part} {value:.1f}" for part, value in us.items() if part != "total")
        return f"{named} = {us['total']:.1f}"

    return [
        f"**Where the time goes** (in process, no broker: µs of CPU per event with its label, "
        f"{profile['events']:,} events in batches of {profile['batch_messages']:,} messages, "
        f"medians of {profile['rounds']} alternating rounds): minimal loop "
        f"{parts(profile['minimal_us_per_event'])}; streamapp worker "
        f"{parts(profile['worker_us_per_event'])}: were Kafka free, the worker would run at "
        f"{profile['minimal_over_worker']:.2f}x the minimal loop's rate.",
        "",
    ]


def _formats_lines(formats: dict[str, Any]) -> list[str]:
    lines = [
        f"**Input formats** (the worker's per-batch CPU in process, {formats['events']:,} "
        f"events + their labels, medians of {formats['rounds']} alternating rounds; Avro "
        "written by confluent-kafka's AvroSerializer, a double per feature, schemas from a "
        "real registry)",
        "",
        "| input | events/s | decode µs/event | bytes/event |",
        "|---|---:|---:|---:|",
    ]
    for name, row in formats["formats"].items():
        lines.append(
            f"| {name} | {row['events_per_s']:,} | {row['decode_us_per_event']} | "
            f"{row['input_bytes_per_event']} |"
        )
    return [*lines, "", f"Avro / JSON rate: {formats['avro_over_json']:.2f}.", ""]


def _tasks_lines(tasks: dict[str, Any]) -> list[str]:
    lines = [
        f"**Throughput by task** (the default worker, {tasks['events']:,} events + their "
        "labels of each stream, medians of alternating runs)",
        "",
        "| bundle, stream | events/s | regression / it | runs |",
        "|---|---:|---:|---|",
    ]
    for name, rate in tasks["events_per_second"].items():
        ratio = tasks["regression_over"].get(name)
        shown = "-" if ratio is None else f"{ratio:.2f}"
        each = " / ".join(f"{value:,}" for value in tasks["runs"].get(name, []))
        lines.append(f"| {name} | {rate:,} | {shown} | {each} |")
    return [*lines, ""]


def render_markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = [
        f"Measured {result['started']} on {m['platform']}, {m['cpus']} CPUs, Python "
        f"{m['python']}, torch {m['torch']}, GPU: {m['cuda'] or 'none'}; broker: "
        f"{result['broker']}.",
        "",
    ]
    if "throughput" in result:
        t = result["throughput"]
        runs = t.get("runs", {})
        lines += [
            f"**Throughput** ({t['events']:,} events + their labels, {t['input_messages']:,} "
            "input messages, every loop reading all of them; the loops the targets compare "
            "alternate, reported as the median of their runs)",
            "",
            "| loop | events/s | streamapp worker / loop | runs |",
            "|---|---:|---:|---|",
        ]
        for name, rate in t["events_per_second"].items():
            each = " / ".join(f"{value:,}" for value in runs.get(name, []))
            lines.append(f"| {name} | {rate:,} | {t['worker_over'][name]:.2f} | {each} |")
        lines.append("")
    if "latency" in result:
        lines += [
            "**End-to-end latency** (producer send -> prediction received by a consumer)",
            "",
            "| path | offered events/s | delivered/s | p50 ms | p95 ms | p99 ms | max ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for level in result["latency"]:
            lines.append(
                f"| {level['path']} | {level['offered_per_s']:,} | "
                f"{level.get('delivered_per_s', 0):,} | "
                f"{level.get('p50_ms')} | {level.get('p95_ms')} | {level.get('p99_ms')} | "
                f"{level.get('max_ms')} |"
            )
        lines += ["", *_against_relay(result)]
    if "learning_labels_per_s" in result:
        lines += [
            f"**Learning**: {result['learning_labels_per_s']:,} labels/s through the ledger "
            "join and `learn_many` (in process).",
            "",
        ]
    if "profile" in result:
        lines += _profile_lines(result["profile"])
    if "formats" in result:
        lines += _formats_lines(result["formats"])
    if "tasks" in result:
        lines += _tasks_lines(result["tasks"])
    if "variants" in result:
        v = result["variants"]
        lines += [
            f"**Backbone variants** (CPU, batches of {v['batch']}; accuracy on digits-shift)",
            "",
            "| variant | embeddings/s | vs torch | source acc. (change) | "
            "target prequential acc. (change) |",
            "|---|---:|---:|---:|---:|",
        ]
        for name, row in v["variants"].items():
            lines.append(
                f"| {name} | {row['embeddings_per_s']:,} | {row['speedup_vs_torch']:.2f} | "
                f"{row['source_accuracy']:.4f} ({row['source_accuracy_change']:+.4f}) | "
                f"{row['target_prequential_accuracy']:.4f} "
                f"({row['target_prequential_accuracy_change']:+.4f}) |"
            )
        cuda = v.get("cuda")
        if cuda:
            lines += ["", f"GPU backbone ({cuda['device']}), rows/s by batch size:", ""]
            sizes = list(cuda["float32"])
            lines += ["| precision | " + " | ".join(sizes) + " |"]
            lines += ["|---|" + "---:|" * len(sizes)]
            for precision in ("float32", "float16"):
                values = " | ".join(f"{cuda[precision][b]:,}" for b in sizes)
                lines.append(f"| {precision} | {values} |")
        lines.append("")
    if "heavy" in result:
        h = result["heavy"]
        lines += [
            f"**Heavy backbone** ({h['architecture']} MLP, CPU, {h['torch_threads']} torch "
            f"thread(s), batches of {h['batch']}): the backbone alone embeds "
            f"{h['backbone_rows_per_s']:,} rows/s; the worker with it scores "
            f"{h['worker_events_per_s']:,} events/s ({h['events']:,} events with their labels), "
            f"{h['worker_over_backbone']:.2f}x the backbone's own rate.",
            "",
        ]
    if "memory" in result:
        mem = result["memory"]
        at = ", ".join(f"{k}: {v}" for k, v in mem["rss_mib_at_progress"].items())
        lines += [
            f"**Memory**: worker RSS over {mem['events']:,} events (half labeled, produced "
            f"while it ran, ledger bound {mem['ledger_max_entries']:,}) in {mem['seconds']} s "
            f"({mem['events_per_s']:,} events/s): MiB at progress {at}; "
            f"peak {mem['peak_rss_mib']} MiB; "
            f"from {mem['steady_from_progress']:.0%} on {mem['steady_min_mib']}-"
            f"{mem['steady_max_mib']} MiB (growth {mem['steady_growth']:+.1%}).",
            "",
        ]
    if "delivery" in result:
        d = result["delivery"]
        lines += [
            f"**Delivery**: median of {2 * d['repeat']} runs each (A B B A), at-least-once "
            f"{d['median_events_per_second']['at-least-once']:,.0f} events/s, exactly-once "
            f"{d['median_events_per_second']['exactly-once']:,.0f} "
            f"(ratio {d['exactly_once_over_at_least_once']:.2f}); the loop's work blocked in "
            "commits: "
            + ", ".join(
                f"{mode} {statistics.median(shares):.1%}"
                for mode, shares in d["commit_share"].items()
            )
            + ".",
            "",
        ]
    if "scaleout" in result:
        rates = result["scaleout"]["events_per_second"]
        over = result["scaleout"].get("over_fewest", {})  # absent from older results
        lines += [
            f"**Scale-out** ({result['scaleout']['events']:,} events, "
            f"{result['scaleout']['partitions']} partitions, a learner alongside): "
            + ", ".join(
                f"{name} {rate:,} events/s" + (f" ({over[name]:.2f}x)" if name in over else "")
                for name, rate in rates.items()
            )
            + ".",
            "",
        ]
    if result.get("targets"):
        lines += ["| target | this run | met |", "|---|---:|:---:|"]
        for name, target in result["targets"].items():
            lines.append(f"| {name} | {target['value']:,} | {'yes' if target['met'] else 'no'} |")
        lines.append("")
    return "\n".join(lines)
