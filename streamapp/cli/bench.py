"""The ``bench`` command: the benchmark suites in one run against one broker."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamapp.cli import common
from streamapp.cli.common import Handler, Subparsers
from streamapp.errors import ConfigError

__all__ = ["COMMANDS", "add_parsers", "cmd_bench"]


def add_parsers(sub: Subparsers) -> None:
    """Add ``bench`` to ``sub``."""
    bench = sub.add_parser(
        "bench", help="benchmarks in one run against one broker (ratios, latency, memory)"
    )
    common.add_kafka_args(bench)
    common.add_worker_args(bench)
    bench.add_argument(
        "suites",
        nargs="*",
        metavar="SUITE",
        help="any of throughput, latency, learning, profile, variants, memory, delivery, "
        "scaleout, heavy, formats (default: all but delivery, scaleout, heavy and formats)",
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
        type=common.ints,
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


def cmd_bench(args: argparse.Namespace) -> int:
    """``streamapp bench``: run the suites, print and write ``bench.md``; 1 if a target fails."""
    from streamapp.bench import DEFAULT_SUITES, SUITES, run_bench

    unknown = set(args.suites) - set(SUITES)
    if unknown:
        raise ConfigError(f"unknown bench suite(s) {sorted(unknown)}; choose from {SUITES}")
    result = run_bench(
        common.settings(args),
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


COMMANDS: dict[str, Handler] = {"bench": cmd_bench}
