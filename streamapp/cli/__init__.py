"""The ``streamapp`` command line: run, demo, train-source, produce, topics, models."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence

from streamapp import __version__
from streamapp.cli import bench, models, produce, report, run, training
from streamapp.cli.common import Handler, configured_log_format
from streamapp.errors import BundleError, StreamappError
from streamapp.ops.logs import configure_logging

__all__ = ["COMMANDS", "build_parser", "main"]

logger = logging.getLogger(__name__)

# in the order of ``streamapp --help``
_GROUPS = (run, training, produce, bench, report, models)

COMMANDS: dict[str, Handler] = {
    name: handler for group in _GROUPS for name, handler in group.COMMANDS.items()
}
"""Each command's handler, by name."""


def build_parser() -> argparse.ArgumentParser:
    """The parser of ``streamapp``: the global options, then each group's commands."""
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
    for group in _GROUPS:
        group.add_parsers(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` (default: ``sys.argv[1:]``), set up logging, run the command.

    Returns the exit status: 2 for a configuration or bundle error, logged in one line.
    """
    args = build_parser().parse_args(argv)
    configure_logging(args.log_level, args.log_format or configured_log_format())
    try:
        return int(COMMANDS[args.command](args) or 0)
    except BundleError as exc:  # one line: a supervisor's log shows why, not a traceback
        logger.error("%s", " ".join(str(exc).split()))
        return 2
    except StreamappError as exc:
        logger.error("%s", " ".join(str(exc).split()))
        return 2
