"""Issue 15's targets on digits-shift with the shipped defaults (prequential: batches of 100,
predict then learn, no label delay), through the real pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.bench.transfer import build_transfer_pipeline, prequential, quarters
from streamapp.guard import GuardSettings
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario
from streamapp.settings import FinetuneSettings

pytestmark = pytest.mark.slow

EVENTS = 20_000


def test_fine_tuning_and_the_guard_meet_the_targets_on_digits_shift(digits_bundle: Path) -> None:
    bundle = load_bundle(digits_bundle)
    X, y, _ = get_scenario("digits-shift").target_data(EVENTS)
    defaults, guard = FinetuneSettings(), GuardSettings()
    head_only, _ = prequential(
        build_transfer_pipeline(bundle, "head", defaults), X[:1000], y[:1000]
    )
    frozen, _ = prequential(build_transfer_pipeline(bundle, "frozen", defaults), X, y)
    guarded, _ = prequential(build_transfer_pipeline(bundle, "guarded", defaults, guard), X, y)
    fine, _ = prequential(build_transfer_pipeline(bundle, "finetuned", defaults), X, y)
    assert fine.mean() >= 0.85
    assert fine[-1000:].mean() >= 0.88
    assert fine[:1000].mean() >= head_only.mean()
    for q_guarded, q_frozen in zip(quarters(guarded), quarters(frozen), strict=True):
        assert q_guarded >= q_frozen - 0.005
    assert np.isclose(guarded.mean(), fine.mean(), atol=0.01)  # the guard costs nothing here


def test_the_guard_keeps_every_quarter_near_the_source_model_on_hyperplane(tmp_path: Path) -> None:
    from streamapp.model.training import train_source_bundle

    scenario = get_scenario("hyperplane")
    train_source_bundle(scenario, tmp_path / "b", epochs=10)
    bundle = load_bundle(tmp_path / "b")
    X, y, _ = scenario.target_data(8_000)
    defaults, guard = FinetuneSettings(), GuardSettings()
    frozen, _ = prequential(build_transfer_pipeline(bundle, "frozen", defaults), X, y)
    guarded, _ = prequential(build_transfer_pipeline(bundle, "guarded", defaults, guard), X, y)
    for q_guarded, q_frozen in zip(quarters(guarded), quarters(frozen), strict=True):
        assert q_guarded >= q_frozen - 0.005
