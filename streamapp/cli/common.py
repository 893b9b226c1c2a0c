"""What the ``streamapp`` commands share: argument types and groups, settings from flags."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from pydantic import ValidationError

from streamapp.errors import ConfigError
from streamapp.ops.logs import LogFormat
from streamapp.settings import Settings

if TYPE_CHECKING:
    from streamapp.scenarios import Scenario

__all__ = [
    "Handler",
    "Subparsers",
    "add_data_args",
    "add_kafka_args",
    "add_task_arg",
    "add_worker_args",
    "columns",
    "configured_log_format",
    "fraction",
    "ints",
    "kv",
    "load_table",
    "report_topics",
    "scenario",
    "settings",
    "task_scenario",
]

Handler: TypeAlias = Callable[[argparse.Namespace], int]
"""A command: the parsed arguments in, the exit status out."""

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
"""What ``add_subparsers()`` returns: each command module adds its commands to it."""


def kv(text: str) -> tuple[str, str]:
    """``"a = b"`` -> ``("a", "b")``.

    >>> kv("security.protocol = SSL")
    ('security.protocol', 'SSL')
    """
    key, sep, value = text.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def ints(text: str) -> list[int]:
    """``"128,64"`` -> ``[128, 64]`` (positive integers)."""
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 128,64, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values


def fraction(text: str) -> float:
    """A number in ``[0, 1)``."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction in [0, 1), got {text!r}")
    return value


def columns(text: str) -> list[str]:
    """``"a, b,"`` -> ``["a", "b"]``.

    >>> columns("a, b,")
    ['a', 'b']
    """
    return [c.strip() for c in text.split(",") if c.strip()]


def add_kafka_args(parser: argparse.ArgumentParser) -> None:
    """``--bootstrap-servers`` and ``-X KEY=VALUE``."""
    parser.add_argument("--bootstrap-servers", "-b", help="Kafka bootstrap servers")
    parser.add_argument(
        "-X",
        dest="kafka",
        type=kv,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="librdkafka property for every client (repeatable), e.g. -X security.protocol=SSL",
    )


def add_worker_args(parser: argparse.ArgumentParser) -> None:
    """The worker's bundle, group, device and batching flags."""
    parser.add_argument("--bundle", type=Path, help="model bundle directory")
    parser.add_argument("--group-id", help="consumer group")
    parser.add_argument("--device", choices=["cpu", "cuda"])
    parser.add_argument("--max-batch", type=int, help="micro-batch size limit")
    parser.add_argument("--max-wait-ms", type=int, help="micro-batch wait limit")
    parser.add_argument("--drift-window", type=int, help="events per drift report")


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """``--label-column`` and ``--feature-columns`` of a data file (:func:`load_table`)."""
    parser.add_argument("--label-column", help="the column (NPZ: the array) holding the labels")
    parser.add_argument(
        "--feature-columns",
        type=columns,
        help="a,b,... (default: every other column; NPZ: the array X)",
    )


def add_task_arg(parser: argparse.ArgumentParser, default: str | None) -> None:
    """``--task classification|regression``: class labels or numeric targets."""
    parser.add_argument(
        "--task",
        choices=["classification", "regression"],
        default=default,
        help="classification (class labels) or regression (a numeric label column)"
        + ("" if default else "; default: the scenario's, else classification"),
    )


def load_table(args: argparse.Namespace, path: Path, **extra: Any) -> Any:
    """The labeled data file ``path``, read with the :func:`add_data_args` flags."""
    from streamapp.datasets import load_table as load

    if not args.label_column:
        raise ConfigError(f"{path} needs --label-column (the column holding the labels)")
    return load(path, args.label_column, args.feature_columns, **extra)


def scenario(name: str, seed: int) -> Scenario:
    """The built-in scenario ``name``; a :class:`ConfigError` naming the choices if none."""
    from streamapp.scenarios import SCENARIOS, get_scenario

    if name not in SCENARIOS:
        raise ConfigError(
            f"unknown scenario {name!r}; choose from {sorted(SCENARIOS)}, "
            f"or train on your own file with --data FILE --label-column COL"
        )
    return get_scenario(name, seed=seed)


def task_scenario(name: str | None, task: str | None, seed: int) -> Scenario:
    """The scenario ``name`` (default: the ``task``'s demo scenario, ``friedman-shift`` for
    regression, else ``digits-shift``); a :class:`ConfigError` when it is not of ``task``."""
    from streamapp.scenarios import scenario_task

    name = name or ("friedman-shift" if task == "regression" else "digits-shift")
    chosen = scenario(name, seed)
    if task is not None and scenario_task(chosen) != task:
        raise ConfigError(
            f"{name} is a {scenario_task(chosen)} scenario, not {task} "
            f"(regression: friedman-shift; classification: digits-shift, hyperplane)"
        )
    return chosen


def settings(args: argparse.Namespace) -> Settings:
    """Environment first, then the flags that were given."""
    base = Settings()
    properties = {**base.kafka.properties, **dict(getattr(args, "kafka", []))}
    return base.with_overrides(
        **{
            "kafka.bootstrap_servers": getattr(args, "bootstrap_servers", None),
            "kafka.properties": properties,
            "model.bundle": getattr(args, "bundle", None),
            "kafka.group_id": getattr(args, "group_id", None),
            "model.device": getattr(args, "device", None),
            "batch.max_size": getattr(args, "max_batch", None),
            "batch.max_wait_ms": getattr(args, "max_wait_ms", None),
            "drift.window_events": getattr(args, "drift_window", None),
            "delivery.processing_guarantee": getattr(args, "processing_guarantee", None),
            "delivery.instance_id": getattr(args, "instance_id", None),
            "role": getattr(args, "role", None),
        }
    )


def configured_log_format() -> LogFormat:
    """The ``log_format`` setting; ``"text"`` while the settings do not validate."""
    try:
        return Settings().log_format
    except ValidationError:
        return "text"  # the command reports the bad setting once logging is up


def report_topics(notes: list[str]) -> None:
    """Print what the topic creation did, a line a note."""
    for note in notes:
        print(note)
