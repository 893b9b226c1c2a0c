"""Coverage of the conformal prediction sets, prequentially, through the real pipeline.

Each stream is scored in batches of 100; a batch's labels join ``delay`` batches later (the
sets are served before the labels that calibrate them exist). Measured on the sets as served
(the ``prediction_set`` of each prediction): coverage over the whole stream, in every
tumbling window of 1,000 labels after the first 500 (the issue's target: within ±1 point of
the target overall, ±5 points in every window), per phase of the stream, and the mean set
size beside it. Methods as in :mod:`streamapp.bench.transfer`.

Run: ``python -m streamapp.bench.coverage [--events 20000] [--stream digits-shift ...]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamapp.bench.transfer import _scenario, build_transfer_pipeline
from streamapp.codec import DecodedBatch
from streamapp.conformal import ConformalCalibrator, prediction_sets
from streamapp.events import FeatureBlock, Feedback
from streamapp.model.bundle import load_bundle
from streamapp.model.training import train_source_bundle
from streamapp.pipeline import Pipeline
from streamapp.settings import ConformalSettings, FinetuneSettings, GuardSettings

__all__ = ["coverage_summary", "main", "run_stream", "served_sets"]

logger = logging.getLogger(__name__)

BATCH = 100
WARMUP, WINDOW = 500, 1000  # the windows: 1,000 labels, after the first 500


def served_sets(
    pipeline: Pipeline, X: np.ndarray, y: np.ndarray, delay: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(covered, size)`` per event, in stream order, of the sets the pipeline served; each
    batch's labels join ``delay`` batches after it was scored (the stream's labels follow in
    label order: event order here)."""
    covered, sizes = [], []
    waiting: list[list[Feedback]] = []
    for start in range(0, len(y), BATCH):
        rows = range(start, min(start + BATCH, len(y)))
        ids = [f"e{i}" for i in rows]
        block = FeatureBlock(ids, [None] * len(ids), X[start : rows.stop], np.zeros(len(ids)), [])
        waiting.append([Feedback(i, int(y[r]), 0.0) for i, r in zip(ids, rows, strict=True)])
        due = waiting.pop(0) if len(waiting) > delay else []
        out = pipeline.process(DecodedBatch(block, feedback=due))
        served = out.predictions
        assert served is not None and served.threshold is not None
        mask = prediction_sets(served.proba, served.threshold)
        covered.append(mask[np.arange(len(ids)), y[start : rows.stop]])
        sizes.append(mask.sum(axis=1))
    return np.concatenate(covered), np.concatenate(sizes).astype(np.float64)


def coverage_summary(
    covered: np.ndarray, sizes: np.ndarray, phase: np.ndarray, target: float
) -> dict[str, Any]:
    """Overall and per-window coverage and mean size of served sets (see the module doc);
    the mean size is over bounded sets (an unbounded interval, before there are enough labels
    or while ACI pays back misses, is counted apart).

    >>> covered = np.r_[np.zeros(500, bool), np.ones(900, bool), np.zeros(100, bool)]
    >>> s = coverage_summary(covered, np.ones(1500), np.zeros(1500, int), 0.9)
    >>> s["windows"], s["worst_window_gap"], s["within_target"]
    ([0.9], 0.0, False)
    """
    windows = [
        float(covered[start : start + WINDOW].mean())
        for start in range(WARMUP, len(covered) - WINDOW + 1, WINDOW)
    ]
    overall = float(covered.mean())
    worst = max((abs(w - target) for w in windows), default=0.0)
    out: dict[str, Any] = {
        "target": target,
        "coverage": overall,
        "mean_size": _finite_mean(sizes),
        "unbounded": int((~np.isfinite(sizes)).sum()),
        "windows": windows,
        "worst_window_gap": worst,
        "within_target": abs(overall - target) <= 0.01 and worst <= 0.05,
    }
    for p in np.unique(phase):
        at = phase == p
        out[f"phase_{int(p)}"] = {
            "coverage": float(covered[at].mean()),
            "mean_size": _finite_mean(sizes[at]),
        }
    return out


def run_stream(
    name: str,
    events: int,
    conformal: ConformalSettings,
    workdir: Path,
    methods: tuple[str, ...] = ("head", "guarded"),
    delay: int = 0,
) -> dict[str, Any]:
    """Every method's coverage summary on one stream."""
    scenario = _scenario(name)
    path = workdir / name
    if not (path / "manifest.json").exists():
        train_source_bundle(scenario, path)
    bundle = load_bundle(path)
    X, y, phase = scenario.target_data(events)
    results: dict[str, Any] = {}
    for method in methods:
        pipeline = build_transfer_pipeline(bundle, method, FinetuneSettings(), GuardSettings())
        c = conformal  # the transfer bench's pipeline, with these sets
        pipeline.conformal = ConformalCalibrator(c.coverage, c.window, c.gamma)
        covered, sizes = served_sets(pipeline, X, y, delay)
        results[method] = coverage_summary(covered, sizes, phase, c.coverage)
        logger.info("%s %s: %s", name, method, results[method])
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--stream", action="append")
    parser.add_argument("--method", action="append")
    parser.add_argument("--delay", type=int, default=0, help="batches before labels join")
    parser.add_argument("--conformal", default="{}", help="ConformalSettings as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the trained source bundles here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    conformal = ConformalSettings(**orjson.loads(args.conformal))
    methods = tuple(args.method or ("head", "guarded"))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stream or ["digits-shift", "hyperplane"]:
            workdir = args.workdir or Path(tmp)
            result = run_stream(name, args.events, conformal, workdir, methods, args.delay)
            print(orjson.dumps({"stream": name, **result}).decode(), flush=True)


def _finite_mean(values: np.ndarray) -> float | None:
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if len(finite) else None


if __name__ == "__main__":
    main()
