"""The regression scenario, prequentially, through the real pipeline of a regression bundle.

``friedman-shift`` (:mod:`streamapp.scenarios.friedman`): a source bundle is trained as
``streamapp train-source --task regression`` trains it, then the target stream is scored in
batches of 100 by the pipeline the worker builds from it (:func:`streamapp.assembly.build_pipeline`:
the online head, the guard, the conformal intervals); a batch's labels join ``delay`` batches
after it was served. Compared on the same events: the frozen source model (the bundle as
trained) and river's from-scratch ``StandardScaler | LinearRegression`` on the raw features,
predict then learn with the same label delay. Reported per quarter of the stream: MAE of
each, the issue's target (served MAE ≤ min(frozen, river) + 2 %) and the paired test of
served against frozen absolute errors;
the intervals as served: coverage over the stream and in every window of 1,000 labels after
the first 500, mean width.

Run: ``python -m streamapp.bench.regression [--events 20000] [--delay 0] [--settings JSON]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson

from streamapp.assembly import build_pipeline
from streamapp.bench.coverage import coverage_summary
from streamapp.codec import DecodedBatch
from streamapp.conformal import intervals
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.model.training import train_source_bundle
from streamapp.regression.metrics import RegressionPerformance, paired_abs_error_test
from streamapp.regression.pipeline import RegressionPipeline
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings

__all__ = ["main", "river_baseline", "run", "served_values"]

logger = logging.getLogger(__name__)

BATCH = 100
STREAM = "friedman-shift"


def served_values(
    pipeline: RegressionPipeline, X: np.ndarray, y: np.ndarray, delay: int = 0
) -> tuple[np.ndarray, np.ndarray, dict[str, list[int]]]:
    """The values and interval half-widths the pipeline served for every event, and the
    change points its reports gave; each batch's labels join ``delay`` batches after it was
    served."""
    values, halves = np.empty(len(y)), np.full(len(y), np.nan)
    change_points: dict[str, list[int]] = {}
    waiting: list[list[Feedback]] = []
    for start in range(0, len(y), BATCH):
        rows = range(start, min(start + BATCH, len(y)))
        ids = [f"e{i}" for i in rows]
        block = FeatureBlock(
            ids,
            [None] * len(ids),
            X[start : rows.stop].astype(np.float32),
            np.full(len(ids), float(start)),
            [SourcePosition("features", 0, i) for i in rows],
        )
        waiting.append(
            [Feedback(i, float(y[k]), float(start)) for i, k in zip(ids, rows, strict=True)]
        )
        due = waiting.pop(0) if len(waiting) > delay else []
        out = pipeline.process(DecodedBatch(block, feedback=due))
        assert out.predictions is not None
        values[start : rows.stop] = out.predictions.proba[:, 0]
        if out.predictions.threshold is not None:
            halves[start : rows.stop] = out.predictions.threshold
        for report in out.drift_reports:
            for name, detector in report["detectors"].items():
                change_points.setdefault(name, []).extend(detector["change_points"])
    return values, halves, change_points


def river_baseline(X: np.ndarray, y: np.ndarray, delay: int = 0) -> np.ndarray:
    """river's from-scratch ``StandardScaler | LinearRegression``: predict a batch, then
    learn, one event at a time, the labels of the batch ``delay`` batches back."""
    from river import linear_model, preprocessing

    model = preprocessing.StandardScaler() | linear_model.LinearRegression()
    rows = [dict(enumerate(x)) for x in X.tolist()]
    targets = y.tolist()
    out = np.empty(len(y))
    starts = list(range(0, len(y), BATCH))
    for b, start in enumerate(starts):
        for i in range(start, min(start + BATCH, len(y))):
            out[i] = cast(float, model.predict_one(rows[i]))
        if b >= delay:
            due = starts[b - delay]
            for i in range(due, min(due + BATCH, len(y))):
                model.learn_one(rows[i], targets[i])
    return out


def _quarters_mae(values: np.ndarray, y: np.ndarray) -> list[float]:
    return [float(np.abs(values[q] - y[q]).mean()) for q in np.array_split(np.arange(len(y)), 4)]


def _summary(values: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    perf = RegressionPerformance(window=1000)
    perf.update(values, y)
    return {"mae_quarters": _quarters_mae(values, y), **perf.summary()["since_start"]}


def run(events: int, settings: Settings, workdir: Path, delay: int = 0) -> dict[str, Any]:
    """The comparison on ``events`` target events (see the module docstring)."""
    scenario = get_scenario(STREAM)
    bundle_path = workdir / STREAM
    if not (bundle_path / "manifest.json").exists():
        train_source_bundle(scenario, bundle_path)
    settings = settings.with_overrides(
        **{"model.bundle": bundle_path, "ledger.max_entries": max(events, 1)}
    )
    pipeline = build_pipeline(settings, load_bundle(bundle_path))
    assert isinstance(pipeline, RegressionPipeline)
    X, y, phase = scenario.target_data(events)
    frozen = pipeline.source_predict(pipeline.embed(X.astype(np.float32)))
    served, halves, change_points = served_values(pipeline, X, y, delay)
    river = river_baseline(X, y, delay)
    low, high = intervals(served, halves)
    known = ~np.isnan(halves)
    quarters = np.array_split(np.arange(events), 4)
    target = [
        float(np.abs(served[q] - y[q]).mean())
        <= 1.02 * min(float(np.abs(frozen[q] - y[q]).mean()), float(np.abs(river[q] - y[q]).mean()))
        for q in quarters
    ]
    report = pipeline.report(0.0)
    return {
        "events": events,
        "delay_batches": delay,
        "served": _summary(served, y),
        "frozen": _summary(frozen, y),
        "river": _summary(river, y),
        "mae_target_met": target,
        "served_vs_frozen": [paired_abs_error_test(served[q], frozen[q], y[q]) for q in quarters],
        "guard": report.get("guard"),
        "intervals": coverage_summary(
            ((low <= y) & (y <= high))[known],
            (high - low)[known],
            phase[known],
            settings.conformal.coverage,
        ),
        "change_points": change_points,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--delay", type=int, default=0, help="batches before labels join")
    parser.add_argument("--settings", default="{}", help="settings overrides as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the trained source bundle here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = Settings().with_overrides(**orjson.loads(args.settings))
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.events, settings, args.workdir or Path(tmp), args.delay)
    print(orjson.dumps({"stream": STREAM, **result}).decode(), flush=True)


if __name__ == "__main__":
    main()
