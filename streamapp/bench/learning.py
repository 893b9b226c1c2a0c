"""Learning throughput in process: labels per second through the ledger join and
``learn_many`` (the events were scored first, so only the label path is timed)."""

from __future__ import annotations

import time

import numpy as np

from streamapp.assembly import build_pipeline
from streamapp.bench.common import SCENARIO
from streamapp.codec import DecodedBatch
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings

__all__ = ["measure_learning"]


def measure_learning(settings: Settings, labels: int = 50_000, batch: int = 500) -> float:
    # a ledger that holds every scored event, so every label joins
    settings = settings.with_overrides(**{"ledger.max_entries": max(labels, 1)})
    pipeline = build_pipeline(settings, load_bundle(settings.model.bundle))
    X, y, _ = get_scenario(SCENARIO).target_data(labels)
    feedback_batches = []
    for start in range(0, labels, batch):
        ids = [f"e{i}" for i in range(start, start + batch)]
        block = FeatureBlock(
            ids,
            [None] * batch,
            X[start : start + batch].astype(np.float32),
            np.zeros(batch),
            [SourcePosition("features", 0, i) for i in range(start, start + batch)],
        )
        pipeline.process(DecodedBatch(block))
        feedback_batches.append(
            [
                Feedback(i, int(label), 1.0)
                for i, label in zip(ids, y[start : start + batch], strict=True)
            ]
        )
    empty = FeatureBlock.empty(X.shape[1])
    started = time.perf_counter()
    for feedback in feedback_batches:
        pipeline.process(DecodedBatch(empty, feedback=feedback))
    return labels / (time.perf_counter() - started)
