"""The commands that turn labeled data into a new bundle: ``train-source`` and ``models import``."""

from __future__ import annotations

import argparse
from pathlib import Path

from streamapp.cli import common
from streamapp.cli.common import Handler, Subparsers
from streamapp.errors import ConfigError

__all__ = ["COMMANDS", "add_import_parser", "add_parsers", "cmd_import", "cmd_train_source"]


def add_parsers(sub: Subparsers) -> None:
    """Add ``train-source`` to ``sub``."""
    train = sub.add_parser(
        "train-source", help="train the source model on a data file or a scenario; write a bundle"
    )
    train_from = train.add_mutually_exclusive_group()
    train_from.add_argument(
        "--scenario",
        help="a built-in scenario (default: digits-shift; with --task regression: friedman-shift)",
    )
    train_from.add_argument("--data", type=Path, help="a labeled CSV, Parquet or NPZ file")
    common.add_data_args(train)
    common.add_task_arg(train, default=None)
    train.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    train.add_argument("--name", help="model name (default: the scenario's or the file's)")
    train.add_argument("--version", dest="model_version", default="1")
    train.add_argument(
        "--hidden", type=common.ints, default=[64], help="hidden layer sizes, e.g. 128,64"
    )
    train.add_argument("--embedding-dim", type=int, default=32)
    train.add_argument("--epochs", type=int, default=40)
    train.add_argument("--test-fraction", type=common.fraction, default=0.2, help="held-out share")
    train.add_argument("--no-standardize", action="store_true", help="feed raw features")
    train.add_argument("--seed", type=int, default=0)


def add_import_parser(models_sub: Subparsers) -> None:
    """Add ``import`` to the ``models`` subcommands ``models_sub``."""
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
    common.add_data_args(imp)
    common.add_task_arg(imp, default="classification")
    imp.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    imp.add_argument("--name", help="model name (default: the backbone file's stem)")
    imp.add_argument("--version", dest="model_version", default="1")
    imp.add_argument(
        "--input-shape", type=common.ints, help="C,H,W (or any shape) the backbone takes"
    )
    imp.add_argument(
        "--head",
        type=Path,
        help="head.npz (coef, intercept) or a .skops classifier; regression: head.npz, coef (1, k)",
    )
    imp.add_argument("--no-standardize", action="store_true", help="the backbone takes raw values")
    imp.add_argument("--test-fraction", type=common.fraction, default=0.2, help="held-out share")
    imp.add_argument("--seed", type=int, default=0)


def cmd_train_source(args: argparse.Namespace) -> int:
    """``streamapp train-source``: train on ``--data FILE`` or a scenario, write a bundle."""
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
        table = common.load_table(args, args.data, task=args.task or "classification")
        name = args.name or args.data.stem
        manifest = train_table_bundle(
            table, args.out, name=name, standardize=not args.no_standardize, **options
        )
    else:
        if args.no_standardize or args.label_column or args.feature_columns:
            raise ConfigError("--no-standardize and the column flags need --data FILE")
        manifest = train_source_bundle(
            common.task_scenario(args.scenario, args.task, args.seed),
            args.out,
            name=args.name,
            **options,
        )
    print(f"wrote {args.out}: {manifest.name} {manifest.version} {manifest.source_metrics}")
    return 0


def cmd_import(args: argparse.Namespace) -> int:
    """``streamapp models import``: a pretrained backbone and labeled data -> a bundle."""
    from streamapp.model.bundle import check_new_bundle
    from streamapp.model.importer import import_bundle

    check_new_bundle(args.out)
    table = common.load_table(args, args.data, task=args.task)
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


COMMANDS: dict[str, Handler] = {"train-source": cmd_train_source}
