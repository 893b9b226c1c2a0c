"""Reports of two scorers merge into the report one worker would have written."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import numpy as np
import pytest

from streamapp.assembly import build_pipeline
from streamapp.drift.merge import merge_reports
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings
from tests.conftest import assert_valid, load_schema


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


def test_merged_conformal_sections_add_up_and_the_merged_report_is_valid(
    digits_bundle: Path,
) -> None:
    settings = Settings(model={"bundle": digits_bundle})
    bundle = load_bundle(digits_bundle)
    X, _, _ = get_scenario("digits-shift").target_data(300)
    reports = []
    for seed, pipeline in enumerate(build_pipeline(settings, bundle) for _ in range(2)):
        pipeline.monitor.update_events(X, np.arange(300) % 10, np.full(300, 1.0))
        assert pipeline.conformal is not None  # on by default
        scores = np.random.default_rng(seed).uniform(0, 1, 100 + 50 * seed)
        pipeline.conformal.update(scores, np.full(len(scores), 0.6), np.full(len(scores), 3.0))
        reports.append(pipeline.report(2.0))
        assert_valid("drift-report", reports[-1])

    merged = merge_reports(reports, bundle.reference)

    # the merged report has no report_seq of its own; its conformal section is the report's
    # (one level per scorer: no alpha_t or threshold to merge)
    section = load_schema("drift-report")["properties"]["conformal"]
    jsonschema.Draft202012Validator(section).validate(merged["conformal"])
    conformal = merged["conformal"]
    since = [r["conformal"]["since_start"] for r in reports]
    assert conformal["since_start"]["labels"] == 250
    covered = sum(s["labels"] * s["coverage"] for s in since)
    assert conformal["since_start"]["coverage"] == pytest.approx(covered / 250)


def test_two_regression_scorers_merge_their_mae_and_rmse(friedman_bundle: Path) -> None:
    settings = Settings(model={"bundle": friedman_bundle})
    bundle = load_bundle(friedman_bundle)
    X, y, _ = get_scenario("friedman-shift").target_data(600)
    rng = np.random.default_rng(0)
    served = y + rng.normal(0, 1.0, 600)
    whole, first, second = (build_pipeline(settings, bundle).monitor for _ in range(3))
    ones = np.ones(600)
    for monitor, rows in (
        (whole, slice(0, 600)),
        (first, slice(0, 250)),
        (second, slice(250, 600)),
    ):
        monitor.update_events(X[rows], monitor.bins(served[rows]), ones[rows])
        monitor.update_labels(y[rows], served[rows], y[rows] + 2.0, ones[rows])
    report = whole.report(2.0)
    expected = report["performance"]
    merged = merge_reports([first.report(2.0), second.report(2.0)], bundle.reference)
    performance = merged["performance"]
    assert performance["labels"] == 600
    for key in ("mae", "rmse", "source_mae", "source_rmse"):
        assert performance[key] == pytest.approx(expected[key], rel=1e-12), key
    assert "r2" not in performance  # not mergeable from the reports
    assert merged["prediction"]["counts"] == report["prediction"]["counts"]  # the value bins
