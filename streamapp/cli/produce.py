"""The broker-side commands: ``produce`` events and feedback, create the ``topics``."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamapp.cli import common
from streamapp.cli.common import Handler, Subparsers
from streamapp.errors import ConfigError

__all__ = ["COMMANDS", "add_parsers", "cmd_produce", "cmd_topics"]


def add_parsers(sub: Subparsers) -> None:
    """Add ``produce`` and ``topics`` to ``sub``."""
    produce = sub.add_parser(
        "produce", help="produce a scenario's or a data file's events and delayed feedback"
    )
    common.add_kafka_args(produce)
    produce_from = produce.add_mutually_exclusive_group()
    produce_from.add_argument(
        "--scenario",
        help="a built-in scenario (default: digits-shift; with --task regression: friedman-shift)",
    )
    produce_from.add_argument(
        "--from-file", type=Path, help="replay a labeled CSV, Parquet or NPZ file, row by row"
    )
    common.add_data_args(produce)
    common.add_task_arg(produce, default=None)
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
    produce.add_argument(
        "--format",
        choices=["json", "avro", "json-schema", "protobuf"],
        default="json",
        help="json (streamapp's own) or a Schema Registry format in the Confluent wire format "
        "(the worker then reads with schema_registry.features_field=features)",
    )
    produce.add_argument(
        "--registry", help="the Schema Registry's URL (default: schema_registry.url)"
    )

    topics = sub.add_parser("topics", help="create the worker's topics")
    common.add_kafka_args(topics)
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


def cmd_produce(args: argparse.Namespace) -> int:
    """``streamapp produce``: a scenario's or a data file's events and delayed feedback."""
    from streamapp.kafka.admin import ensure_topics
    from streamapp.scenarios import scenario_task, stream
    from streamapp.scenarios.produce import produce_records, table_records

    settings = common.settings(args)
    timing = {
        "rate": args.rate,
        "label_delay_s": args.label_delay,
        "label_fraction": args.label_fraction,
        "seed": args.seed,
        "id_prefix": args.id_prefix,
    }
    if args.from_file is not None:
        table = common.load_table(
            args,
            args.from_file,
            id_column=args.id_column,
            ts_column=args.ts_column,
            task=args.task or "classification",
        )
        events, records = len(table), table_records(table, **timing)
        task = table.task
    else:
        if args.id_column or args.ts_column or args.label_column:
            raise ConfigError("--label-column, --id-column and --ts-column need --from-file FILE")
        scenario = common.task_scenario(args.scenario, args.task, args.seed)
        events, records = args.events, stream(scenario, args.events, **timing)
        task = scenario_task(scenario)
    if args.create_topics:
        common.report_topics(ensure_topics(settings, partitions=args.partitions, role="producer"))
    if args.format == "json":
        sent = produce_records(settings, records, realtime=args.realtime)
    else:
        from streamapp.codec.wiring import registry_client
        from streamapp.scenarios.registry_format import RegistryEncoder

        if args.registry:
            settings = settings.with_overrides(**{"schema_registry.url": args.registry})
        with registry_client(settings.schema_registry) as client:
            encode = RegistryEncoder(client, args.format, task=task)
            sent = produce_records(settings, records, realtime=args.realtime, encode=encode)
    print(f"produced {sent} records ({events} events) to {settings.kafka.bootstrap_servers}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """``streamapp topics``: create (or ``--grow``) the topics a role uses."""
    from streamapp.kafka.admin import ensure_topics, topic_specs

    settings = common.settings(args)
    role = args.topics_role
    notes = ensure_topics(settings, partitions=args.partitions, role=role, grow=args.grow)
    common.report_topics(notes)
    names = [spec.name for spec in topic_specs(settings, role)]
    print("topics ready:" if not notes or args.grow else "topics exist:", ", ".join(names))
    return 0


COMMANDS: dict[str, Handler] = {"produce": cmd_produce, "topics": cmd_topics}
