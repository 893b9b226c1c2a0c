"""Reports of two scorers merge into the report one worker would have written."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.assembly import build_pipeline
from streamapp.drift.merge import merge_reports
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings


def test_two_halves_merge_into_the_whole(digits_bundle: Path) -> None:
    settings = Settings(model={"bundle": digits_bundle})
    bundle = load_bundle(digits_bundle)
    X, _, _ = get_scenario("digits-shift").target_data(600)
    predicted = np.arange(600) % 10
    ts = np.full(600, 1.0)
    whole, first, second = (build_pipeline(settings, bundle).monitor for _ in range(3))
    whole.update_events(X, predicted, ts)
    first.update_events(X[:250], predicted[:250], ts[:250])
    second.update_events(X[250:], predicted[250:], ts[250:])
    expected = whole.report(2.0)
    reports = [first.report(2.0), second.report(2.0)]

    merged = merge_reports(reports, bundle.reference)

    assert merged["window"]["events"] == 600 and merged["sources"] == 2
    for got, want in zip(merged["features"], expected["features"], strict=True):
        for key in ("psi", "js", "ks", "p_value", "mean_shift", "std_ratio"):
            assert got[key] == pytest.approx(want[key], rel=1e-9, abs=1e-12), (got["name"], key)
        assert got["drifted"] == want["drifted"]
    assert merged["dataset"] == expected["dataset"]
    assert merged["prediction"]["counts"] == expected["prediction"]["counts"]
    assert merged["prediction"]["psi"] == pytest.approx(expected["prediction"]["psi"])
