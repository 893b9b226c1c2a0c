"""The ``models`` commands: verify and export bundles, and the registry's aliases."""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from streamapp.cli import common, training
from streamapp.cli.common import Handler, Subparsers
from streamapp.errors import ConfigError

__all__ = ["COMMANDS", "add_parsers", "cmd_models"]

logger = logging.getLogger(__name__)


def add_parsers(sub: Subparsers) -> None:
    """Add ``models`` and its subcommands (``import`` from :mod:`streamapp.cli.training`)."""
    models = sub.add_parser("models", help="inspect model bundles")
    models_sub = models.add_subparsers(dest="models_command", required=True)
    verify = models_sub.add_parser("verify", help="verify a bundle's checksums and shapes")
    verify.add_argument("path", type=Path)
    training.add_import_parser(models_sub)
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
        command.add_argument(
            "--registry", type=Path, help="registry root (or STREAMAPP_MODEL__REGISTRY)"
        )
        common.add_kafka_args(command)
        if name == "register":
            command.add_argument("path", type=Path)
        if name in ("promote", "rollback"):
            command.add_argument("name")
            if name == "promote":
                command.add_argument("version")
            command.add_argument("--alias", default="production")


def cmd_models(args: argparse.Namespace) -> int:
    """``streamapp models ...``: dispatch on the subcommand; ``verify`` is here."""
    from streamapp.model.bundle import load_bundle

    if args.models_command == "import":
        return training.cmd_import(args)
    if args.models_command == "export":
        from streamapp.model.variants import export_onnx

        print(f"wrote {export_onnx(args.path)}; its checksum is in the manifest")
        return 0
    if args.models_command in ("list", "register", "promote", "rollback"):
        return _registry_command(args)
    bundle = load_bundle(args.path)
    m = bundle.manifest
    outputs = "regression" if m.task == "regression" else f"{len(m.classes)} classes"
    print(
        f"OK {m.name} {m.version}: {m.input_dim} features -> {m.embedding_dim}-d embedding, "
        f"{outputs}, source metrics {m.source_metrics}"
    )
    return 0


def _registry_command(args: argparse.Namespace) -> int:
    from streamapp.model.registry import Registry
    from streamapp.serving.hotswap import ControlEvent, publish_control_event

    settings = common.settings(args)
    root = args.registry or settings.model.registry
    if root is None:
        raise ConfigError("no registry: pass --registry DIR or set STREAMAPP_MODEL__REGISTRY")
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
    if settings.kafka.bootstrap_servers:
        event = ControlEvent(args.models_command, ref.name, ref.version, args.alias, time.time())
        publish_control_event(settings, event)
        print(f"published {args.models_command} on {settings.topics.model_control}")
    else:
        logger.warning("no bootstrap servers: running workers see the change on restart")
    return 0


COMMANDS: dict[str, Handler] = {"models": cmd_models}
