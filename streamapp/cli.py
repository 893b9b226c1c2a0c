"""The ``streamapp`` command line: run, demo, train-source, produce, topics, models."""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

from pydantic import ValidationError

from streamapp import __version__
from streamapp.errors import BundleError, ConfigError, StreamappError
from streamapp.ops.logs import LogFormat, configure_logging
from streamapp.settings import Settings

__all__ = ["main"]

logger = logging.getLogger(__name__)


def _kv(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def _add_kafka_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers", "-b", help="Kafka bootstrap servers")
    parser.add_argument(
        "-X",
        dest="kafka",
        type=_kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka property for every client (repeatable), e.g. -X security.protocol=SSL",
    )


def _add_worker_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bundle", type=Path, help="model bundle directory")
    parser.add_argument("--group-id", help="consumer group")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--max-batch", type=int, help="micro-batch size limit")
    parser.add_argument("--max-wait-ms", type=int, help="micro-batch wait limit")
    parser.add_argument("--drift-window", type=int, help="events per drift report")


def _ints(text: str) -> list[int]:
    """``"128,64"`` -> ``[128, 64]`` (positive integers)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 128,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def _add_data_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--label-column", help="the column (NPZ: the array) holding the labels")
    parser.add_argument(
        "--feature-columns",
        type=lambda text: [c.strip() for c in text.split(",") if c.strip()],
        help="a,b,... (default: every other column; NPZ: the array X)",
    )


def _load_table(args: argparse.Namespace, path: Path, **extra: Any) -> Any:
    from streamapp.datasets import load_table

    if not args.label_column:
        raise ConfigError(f"{path} needs --label-column (the column holding the labels)")
    return load_table(path, args.label_column, args.feature_columns, **extra)


def _settings(args: argparse.Namespace) -> Settings:
    """Environment first, then the flags that were given."""
    base = Settings()
    kafka = {**base.kafka, **dict(getattr(args, "kafka", []))}
    return base.with_overrides(
        **{
            "bootstrap_servers": getattr(args, "bootstrap_servers", None),
            "kafka": kafka,
            "bundle": getattr(args, "bundle", None),
            "group_id": getattr(args, "group_id", None),
            "device": getattr(args, "device", None),
            "batch.max_size": getattr(args, "max_batch", None),
            "batch.max_wait_ms": getattr(args, "max_wait_ms", None),
            "drift.window_events": getattr(args, "drift_window", None),
            "processing_guarantee": getattr(args, "processing_guarantee", None),
            "instance_id": getattr(args, "instance_id", None),
            "role": getattr(args, "role", None),
        }
    )


def _configured_log_format() -> LogFormat:
    try:
        return Settings().log_format
    except ValidationError:
        return "text"  # the command reports the bad setting once logging is up


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="streamapp", description=__doc__)
    parser.add_argument("--version", action="version", version=f"streamapp {__version__}")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING, ...")
    parser.add_argument(
        "--log-format",
        choices=["text", "json"],
        default=None,
        help="text (key=value context) or JSON lines (default: the log_format setting)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run the streaming worker until SIGTERM/SIGINT")
    _add_kafka_args(run)
    _add_worker_args(run)
    run.add_argument("--create-topics", action="store_true", help="create missing topics first")
    run.add_argument("--partitions", type=int, default=1, help="partitions for --create-topics")
    run.add_argument(
        "--processing-guarantee", choices=["at-least-once", "exactly-once"], default=None
    )
    run.add_argument("--instance-id", help="stable worker id (transactional.id, state key)")
    run.add_argument(
        "--role",
        choices=["all", "scorer", "learner"],
        default=None,
        help="all (default): one process; scorer and learner: see 'Scaling out' in the docs",
    )
    run.add_argument(
        "--runtime",
        choices=["confluent", "faust"],
        default="confluent",
        help="confluent: the default worker; faust: the same pipeline as faust-streaming agents",
    )

    demo = sub.add_parser("demo", help="broker + producer + worker, end to end, with live progress")
    _add_kafka_args(demo)
    _add_worker_args(demo)
    demo.add_argument("--scenario", default="digits-shift")
    demo.add_argument("--events", type=int, default=20_000)
    demo.add_argument("--rate", type=float, default=2_000.0, help="events per second")
    demo.add_argument("--label-delay", type=float, default=2.0, help="seconds until a label")
    demo.add_argument("--label-fraction", type=float, default=1.0)
    demo.add_argument("--partitions", type=int, default=2)

    train = sub.add_parser(
        "train-source", help="train the source model on a data file or a scenario; write a bundle"
    )
    train_from = train.add_mutually_exclusive_group()
    train_from.add_argument("--scenario", help="a built-in scenario (default: digits-shift)")
    train_from.add_argument("--data", type=Path, help="a labeled CSV, Parquet or NPZ file")
    _add_data_args(train)
    train.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    train.add_argument("--name", help="model name (default: the scenario's or the file's)")
    train.add_argument("--version", dest="model_version", default="1")
    train.add_argument("--hidden", type=_ints, default=[64], help="hidden layer sizes, e.g. 128,64")
    train.add_argument("--embedding-dim", type=int, default=32)
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--test-fraction", type=_fraction, default=0.2, help="held-out share")
    train.add_argument("--no-standardize", action="store_true", help="feed raw features")
    train.add_argument("--seed", type=int, default=0)

    produce = sub.add_parser(
        "produce", help="produce a scenario's or a data file's events and delayed feedback"
    )
    _add_kafka_args(produce)
    produce_from = produce.add_mutually_exclusive_group()
    produce_from.add_argument("--scenario", help="a built-in scenario (default: digits-shift)")
    produce_from.add_argument(
        "--from-file", type=Path, help="replay a labeled CSV, Parquet or NPZ file, row by row"
    )
    _add_data_args(produce)
    produce.add_argument("--id-column", help="event ids (default: --id-prefix + row number)")
    produce.add_argument("--ts-column", help="event times in seconds (default: paced at --rate)")
    produce.add_argument("--events", type=int, default=10_000)
    produce.add_argument("--rate", type=float, default=1_000.0, help="events per second")
    produce.add_argument("--label-delay", type=float, default=2.0)
    produce.add_argument("--label-fraction", type=float, default=1.0)
    produce.add_argument("--seed", type=int, default=0)
    produce.add_argument("--id-prefix", default="e")
    produce.add_argument("--realtime", action="store_true", help="pace records at --rate")
    produce.add_argument("--create-topics", action="store_true")
    produce.add_argument("--partitions", type=int, default=1)

    topics = sub.add_parser("topics", help="create the worker's topics")
    _add_kafka_args(topics)
    topics.add_argument("--partitions", type=int, default=1)
    topics.add_argument(
        "--role",
        dest="topics_role",  # not the worker's role setting: "producer" is no worker role
        choices=["all", "scorer", "learner", "producer"],
        default=None,
        help="only the topics this role uses (default: every topic streamapp knows)",
    )
    topics.add_argument(
        "--grow",
        action="store_true",
        help="add partitions to existing topics that have fewer than --partitions",
    )

    bench = sub.add_parser(
        "bench", help="benchmarks in one run against one broker (ratios, latency, memory)"
    )
    _add_kafka_args(bench)
    _add_worker_args(bench)
    bench.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="any of throughput, latency, learning, profile, variants, memory, delivery, "
        "scaleout (default: all but delivery and scaleout)",
    )
    bench.add_argument("--events", type=int, default=20_000, help="backlog for throughput")
    bench.add_argument(
        "--loads", default="1000,2000,5000", help="offered events/s for the latency suite"
    )
    bench.add_argument("--latency-seconds", type=float, default=10.0, help="per load level")
    bench.add_argument("--memory-events", type=int, default=1_000_000)
    bench.add_argument(
        "--repeat",
        type=int,
        default=3,
        help="runs of each compared loop (throughput, profile) and of each mode (delivery)",
    )
    bench.add_argument(
        "--scorers",
        type=_ints,
        default=(1, 2),
        help="scorer processes per scaleout run, e.g. 1,2,4 (the 4-over-1 target wants 8+ cores)",
    )
    bench.add_argument(
        "--broker",
        choices=("auto", "kafka", "embedded"),
        default="auto",
        help="without -b: start Apache Kafka (kafka), noida-db (embedded), or Apache Kafka "
        "where Java runs it, else noida-db (auto); the report names the broker measured",
    )
    bench.add_argument("--out", type=Path, default=Path("bench-results"))

    report = sub.add_parser("report", help="render the drift history as PNG + HTML")
    _add_kafka_args(report)
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-topic", metavar="TOPIC", help="read every report on TOPIC")
    source.add_argument("--from-file", metavar="JSONL", type=Path, help="a file of reports")
    report.add_argument("--out", type=Path, default=Path("drift-report"), help="directory")

    models = sub.add_parser("models", help="inspect model bundles")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    verify = models_sub.add_parser("verify", help="verify a bundle's checksums and shapes")
    verify.add_argument("path", type=Path)
    imp = models_sub.add_parser(
        "import", help="turn your pretrained feature extractor and labeled data into a bundle"
    )
    imp.add_argument(
        "--backbone",
        type=Path,
        required=True,
        help="torch.export program (.pt2), ONNX (.onnx) or a safetensors state_dict of a "
        "built-in architecture (.safetensors)",
    )
    imp.add_argument("--data", type=Path, required=True, help="labeled CSV, Parquet or NPZ")
    _add_data_args(imp)
    imp.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    imp.add_argument("--name", help="model name (default: the backbone file's stem)")
    imp.add_argument("--version", dest="model_version", default="1")
    imp.add_argument("--input-shape", type=_ints, help="C,H,W (or any shape) the backbone takes")
    imp.add_argument("--head", type=Path, help="head.npz (coef, intercept) or a .skops classifier")
    imp.add_argument("--no-standardize", action="store_true", help="the backbone takes raw values")
    imp.add_argument("--test-fraction", type=_fraction, default=0.2, help="held-out share")
    imp.add_argument("--seed", type=int, default=0)
    export = models_sub.add_parser(
        "export", help="export the backbone to ONNX inside the bundle (for variant=onnx)"
    )
    export.add_argument("path", type=Path)
    for name, help_text in (
        ("list", "registered models, versions and aliases"),
        ("register", "verify a bundle and copy it into the registry"),
        ("promote", "point an alias at a version; running workers swap it in"),
        ("rollback", "point an alias back at its previous version"),
    ):
        command = models_sub.add_parser(name, help=help_text)
        command.add_argument("--registry", type=Path, help="registry root (or STREAMAPP_REGISTRY)")
        _add_kafka_args(command)
        if name == "register":
            command.add_argument("path", type=Path)
        if name in ("promote", "rollback"):
            command.add_argument("name")
            if name == "promote":
                command.add_argument("version")
            command.add_argument("--alias", default="production")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format or _configured_log_format())
    try:
        return int(COMMANDS[args.command](args) or 0)
    except BundleError as exc:  # one line: a supervisor's log shows why, not a traceback
        logger.error("%s", " ".join(str(exc).split()))
        return 2
    except StreamappError as exc:
        logger.error("%s", " ".join(str(exc).split()))
        return 2


def cmd_run(args: argparse.Namespace) -> int:
    from streamapp.kafka.admin import ensure_topics
    from streamapp.worker import Worker

    settings = _settings(args)
    if args.create_topics:  # only the topics this role and the enabled features use
        _report_topics(ensure_topics(settings, partitions=args.partitions, role=settings.role))
    if args.runtime == "faust":
        _exec_faust(settings, args.log_level)
    if settings.role == "learner":
        from streamapp.learner import Learner

        learner = Learner(settings)
        try:
            learned = learner.run()
        finally:
            learner.close()
        logger.info("learned from %d examples, head_seq %d", learned, learner.head.n_learned)
        return 0
    worker = Worker(settings)
    try:
        summary = worker.run()
    finally:
        worker.close()
    logger.info("processed %d messages, %d events scored", summary.messages, summary.events_scored)
    return 0


def _exec_faust(settings: Settings, log_level: str) -> NoReturn:
    """Replace this process with ``faust -A streamapp.faust_app worker`` on ``settings``."""
    try:
        import faust  # noqa: F401
    except ImportError as exc:
        raise ConfigError(
            "--runtime faust needs faust-streaming: pip install streamapp[faust]"
        ) from exc
    command = [sys.executable, "-m", "faust", "-A", "streamapp.faust_app", "worker"]
    level = {"warning": "warn", "critical": "crit"}.get(log_level.lower(), log_level.lower())
    command += ["-l", level, "--without-web"]
    os.execvpe(sys.executable, command, settings.subprocess_env())


def cmd_demo(args: argparse.Namespace) -> int:
    from streamapp.demo import run_demo

    return run_demo(_settings(args), args)


def cmd_train_source(args: argparse.Namespace) -> int:
    from streamapp.model.bundle import check_new_bundle
    from streamapp.model.training import train_source_bundle, train_table_bundle

    check_new_bundle(args.out)  # before reading or training anything
    options = {
        "version": args.model_version,
        "hidden": args.hidden,
        "embedding_dim": args.embedding_dim,
        "epochs": args.epochs,
        "seed": args.seed,
        "holdout": args.test_fraction,
    }
    if args.data is not None:
        table = _load_table(args, args.data)
        name = args.name or args.data.stem
        manifest = train_table_bundle(
            table, args.out, name=name, standardize=not args.no_standardize, **options
        )
    else:
        if args.no_standardize or args.label_column or args.feature_columns:
            raise ConfigError("--no-standardize and the column flags need --data FILE")
        manifest = train_source_bundle(
            _scenario(args.scenario or "digits-shift", args.seed),
            args.out,
            name=args.name,
            **options,
        )
    print(f"wrote {args.out}: {manifest.name} {manifest.version} {manifest.source_metrics}")
    return 0


def _scenario(name: str, seed: int) -> Any:
    from streamapp.scenarios import SCENARIOS, get_scenario

    if name not in SCENARIOS:
        raise ConfigError(
            f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)}, "
            f"or train on your own file with --data FILE --label-column COL"
        )
    return get_scenario(name, seed=seed)


def cmd_import(args: argparse.Namespace) -> int:
    from streamapp.model.bundle import check_new_bundle
    from streamapp.model.importer import import_bundle

    check_new_bundle(args.out)
    table = _load_table(args, args.data)
    manifest = import_bundle(
        args.backbone,
        table,
        args.out,
        name=args.name or args.backbone.stem,
        version=args.model_version,
        input_shape=args.input_shape,
        head_path=args.head,
        standardize=not args.no_standardize,
        holdout=args.test_fraction,
        seed=args.seed,
    )
    print(
        f"wrote {args.out}: {manifest.name} {manifest.version} ({manifest.backbone_format}, "
        f"{manifest.input_dim} features -> {manifest.embedding_dim}-d) {manifest.source_metrics}"
    )
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from streamapp.kafka.admin import ensure_topics
    from streamapp.scenarios import stream
    from streamapp.scenarios.produce import produce_records, table_records

    settings = _settings(args)
    timing = {
        "rate": args.rate,
        "label_delay_s": args.label_delay,
        "label_fraction": args.label_fraction,
        "seed": args.seed,
        "id_prefix": args.id_prefix,
    }
    if args.from_file is not None:
        table = _load_table(
            args, args.from_file, id_column=args.id_column, ts_column=args.ts_column
        )
        events, records = len(table), table_records(table, **timing)
    else:
        if args.id_column or args.ts_column or args.label_column:
            raise ConfigError("--label-column, --id-column and --ts-column need --from-file FILE")
        scenario = _scenario(args.scenario or "digits-shift", args.seed)
        events, records = args.events, stream(scenario, args.events, **timing)
    if args.create_topics:
        _report_topics(ensure_topics(settings, partitions=args.partitions, role="producer"))
    sent = produce_records(settings, records, realtime=args.realtime)
    print(f"produced {sent} records ({events} events) to {settings.bootstrap_servers}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from streamapp.kafka.admin import ensure_topics, topic_specs

    settings = _settings(args)
    role = args.topics_role
    notes = ensure_topics(settings, partitions=args.partitions, role=role, grow=args.grow)
    _report_topics(notes)
    names = [spec.name for spec in topic_specs(settings, role)]
    print("topics ready:" if not notes or args.grow else "topics exist:", ", ".join(names))
    return 0


def _report_topics(notes: list[str]) -> None:
    for note in notes:
        print(note)


def cmd_report(args: argparse.Namespace) -> int:
    from streamapp.report import load_reports, read_reports, render_report

    if args.from_file is not None:
        if not args.from_file.is_file():
            raise ConfigError(f"no such file: {args.from_file}")
        reports = load_reports(args.from_file)
    else:
        settings = _settings(args)
        if not settings.bootstrap_servers:
            raise ConfigError(
                "--from-topic needs --bootstrap-servers (or STREAMAPP_BOOTSTRAP_SERVERS)"
            )
        reports = read_reports(settings, args.from_topic)
    png, page = render_report(reports, args.out)
    print(f"{len(reports)} reports -> {png}, {page}")
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from streamapp.bench import DEFAULT_SUITES, SUITES, run_bench

    unknown = set(args.suites) - set(SUITES)
    if unknown:
        raise ConfigError(f"unknown bench suite(s) {sorted(unknown)}; choose from {SUITES}")
    result = run_bench(
        _settings(args),
        tuple(args.suites) or DEFAULT_SUITES,
        events=args.events,
        loads=tuple(int(rate) for rate in args.loads.split(",")),
        latency_seconds=args.latency_seconds,
        memory_events=args.memory_events,
        repeat=args.repeat,
        scorers=tuple(args.scorers),
        out=args.out,
        broker={"auto": None, "kafka": "kafka", "embedded": "noida"}[args.broker],
    )
    print((args.out / "bench.md").read_text())
    print(f"written: {args.out / 'bench.json'}, {args.out / 'bench.md'}")
    return 0 if result else 1


def cmd_models(args: argparse.Namespace) -> int:
    from streamapp.model.bundle import load_bundle

    if args.models_command == "import":
        return cmd_import(args)
    if args.models_command == "export":
        from streamapp.model.variants import export_onnx

        print(f"wrote {export_onnx(args.path)}; its checksum is in the manifest")
        return 0
    if args.models_command in ("list", "register", "promote", "rollback"):
        return _registry_command(args)
    bundle = load_bundle(args.path)
    m = bundle.manifest
    print(
        f"OK {m.name} {m.version}: {m.input_dim} features -> {m.embedding_dim}-d embedding, "
        f"{len(m.classes)} classes, source metrics {m.source_metrics}"
    )
    return 0


def _registry_command(args: argparse.Namespace) -> int:
    from streamapp.hotswap import ControlEvent, publish_control_event
    from streamapp.model.registry import Registry

    settings = _settings(args)
    root = args.registry or settings.registry
    if root is None:
        raise ConfigError("no registry: pass --registry DIR or set STREAMAPP_REGISTRY")
    registry = Registry(root)
    if args.models_command == "list":
        for name in registry.names():
            aliases = ", ".join(f"{a}={v}" for a, v in sorted(registry.aliases(name).items()))
            print(
                f"{name}: versions {', '.join(registry.versions(name))}; {aliases or 'no aliases'}"
            )
        return 0
    if args.models_command == "register":
        print(f"registered {registry.register(args.path)}")
        return 0
    if args.models_command == "promote":
        ref = registry.promote(args.name, args.version, args.alias)
    else:
        ref = registry.rollback(args.name, args.alias)
    print(f"{ref.name}@{args.alias} -> {ref.version}")
    if settings.bootstrap_servers:
        event = ControlEvent(args.models_command, ref.name, ref.version, args.alias, time.time())
        publish_control_event(settings, event)
        print(f"published {args.models_command} on {settings.topics.model_control}")
    else:
        logger.warning("no bootstrap servers: running workers see the change on restart")
    return 0


COMMANDS: dict[str, Any] = {
    "run": cmd_run,
    "demo": cmd_demo,
    "train-source": cmd_train_source,
    "produce": cmd_produce,
    "topics": cmd_topics,
    "models": cmd_models,
    "bench": cmd_bench,
    "report": cmd_report,
}
