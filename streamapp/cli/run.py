"""The worker commands: ``run`` (the confluent worker, a learner, or faust) and ``demo``."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import NoReturn

from streamapp.cli import common
from streamapp.cli.common import Handler, Subparsers
from streamapp.errors import ConfigError
from streamapp.settings import Settings

__all__ = ["COMMANDS", "add_parsers", "cmd_demo", "cmd_run"]

logger = logging.getLogger(__name__)


def add_parsers(sub: Subparsers) -> None:
    """Add ``run`` and ``demo`` to ``sub``."""
    run = sub.add_parser("run", help="run the streaming worker until SIGTERM/SIGINT")
    common.add_kafka_args(run)
    common.add_worker_args(run)
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
    common.add_kafka_args(demo)
    common.add_worker_args(demo)
    demo.add_argument("--scenario", default="digits-shift")
    demo.add_argument("--events", type=int, default=20_000)
    demo.add_argument("--rate", type=float, default=2_000.0, help="events per second")
    demo.add_argument("--label-delay", type=float, default=2.0, help="seconds until a label")
    demo.add_argument("--label-fraction", type=float, default=1.0)
    demo.add_argument("--partitions", type=int, default=2)


def cmd_run(args: argparse.Namespace) -> int:
    """``streamapp run``: serve until SIGTERM/SIGINT (or exec the faust runtime)."""
    from streamapp.kafka.admin import ensure_topics
    from streamapp.worker import Worker

    settings = common.settings(args)
    if args.create_topics:  # only the topics this role and the enabled features use
        common.report_topics(
            ensure_topics(settings, partitions=args.partitions, role=settings.role)
        )
    if args.runtime == "faust":
        _exec_faust(settings, args.log_level)
    if settings.role == "learner":
        from streamapp.roles.learner import Learner

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
    settings.schema_registry.require_json("faust")
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
    """``streamapp demo``: broker, producer and worker, end to end."""
    from streamapp.demo import run_demo

    return run_demo(common.settings(args), args)


COMMANDS: dict[str, Handler] = {"run": cmd_run, "demo": cmd_demo}
