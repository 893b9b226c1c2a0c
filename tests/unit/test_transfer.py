"""Parameter transfer + online adaptation beats the frozen source model on the target domain."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from streamapp.model.backbone import Embedder
from streamapp.model.bundle import load_bundle
from streamapp.model.head import SGDHead
from streamapp.scenarios import get_scenario


def prequential(
    head: SGDHead, Z: np.ndarray, y: np.ndarray, learn: bool, batch: int = 100
) -> np.ndarray:
    correct = []
    for start in range(0, len(y), batch):
        part = slice(start, start + batch)
        correct.append(head.predict_proba_many(Z[part]).argmax(axis=1) == y[part])
        if learn:
            head.learn_many(Z[part], y[part])
    return np.concatenate(correct)


def test_adapted_head_beats_the_frozen_source_model_on_digits_shift(digits_bundle: Path) -> None:
    bundle = load_bundle(digits_bundle)
    scenario = get_scenario("digits-shift")
    X, y, phase = scenario.target_data(6000)
    pre = bundle.manifest.preprocessing
    Z = Embedder(bundle.backbone, np.asarray(pre["mean"]), np.asarray(pre["std"]))(X)
    classes = bundle.manifest.classes
    frozen = prequential(
        SGDHead(bundle.head_coef, bundle.head_intercept, classes), Z, y, learn=False
    )
    adapted = prequential(
        SGDHead(bundle.head_coef, bundle.head_intercept, classes), Z, y, learn=True
    )
    for p in (0, 1):
        mask = phase == p
        # after the first 1000 labels of each phase the adapted head is clearly better
        tail = mask & (np.arange(len(y)) >= np.flatnonzero(mask)[0] + 1000)
        assert adapted[tail].mean() > frozen[tail].mean() + 0.15, (
            p,
            adapted[tail].mean(),
            frozen[tail].mean(),
        )
    assert adapted.mean() > frozen.mean() + 0.15
