"""The ``report`` command: render the drift history as PNG + HTML."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamapp.cli import common
from streamapp.cli.common import Handler, Subparsers
from streamapp.errors import ConfigError

__all__ = ["COMMANDS", "add_parsers", "cmd_report"]


def add_parsers(sub: Subparsers) -> None:
    """Add ``report`` to ``sub``."""
    report = sub.add_parser("report", help="render the drift history as PNG + HTML")
    common.add_kafka_args(report)
    source = report.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-topic", metavar="TOPIC", help="read every report on TOPIC")
    source.add_argument("--from-file", metavar="JSONL", type=Path, help="a file of reports")
    report.add_argument("--out", type=Path, default=Path("drift-report"), help="directory")


def cmd_report(args: argparse.Namespace) -> int:
    """``streamapp report``: the drift reports of a topic or a file -> PNG + HTML."""
    from streamapp.drift.history import load_reports, read_reports, render_report

    if args.from_file is not None:
        if not args.from_file.is_file():
            raise ConfigError(f"no such file: {args.from_file}")
        reports = load_reports(args.from_file)
    else:
        settings = common.settings(args)
        if not settings.kafka.bootstrap_servers:
            raise ConfigError(
                "--from-topic needs --bootstrap-servers (or STREAMAPP_KAFKA__BOOTSTRAP_SERVERS)"
            )
        reports = read_reports(settings, args.from_topic)
    png, page = render_report(reports, args.out)
    print(f"{len(reports)} reports -> {png}, {page}")
    return 0


COMMANDS: dict[str, Handler] = {"report": cmd_report}
