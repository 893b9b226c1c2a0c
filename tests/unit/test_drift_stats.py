from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon

from streamapp.drift.monitor import DriftMonitor
from streamapp.drift.page_hinkley import PageHinkley
from streamapp.drift.performance import ErrorDetectors, RollingPerformance
from streamapp.drift.stats import ReferenceProfile, compare_binned, cut_points
from streamapp.scenarios import get_scenario


def test_psi_matches_the_hand_formula_on_smoothed_proportions() -> None:
    ref, win = np.array([[40.0, 30.0, 30.0]]), np.array([[10.0, 5.0, 15.0]])
    q = (ref + 0.5) / (100 + 1.5)
    p = (win + 0.5) / (30 + 1.5)
    expected = ((p - q) * np.log(p / q)).sum()
    result = compare_binned(ref, win)
    assert result.psi[0] == pytest.approx(expected, rel=1e-12)
    scale = 1 / 30 + 1 / 100
    assert result.p_value[0] == pytest.approx(stats.chi2.sf(expected / scale, 2), rel=1e-12)


def test_js_matches_scipy_in_bits() -> None:
    ref, win = np.array([[40.0, 30.0, 30.0, 0.0]]), np.array([[10.0, 5.0, 10.0, 5.0]])
    expected = jensenshannon(ref[0] / 100, win[0] / 30, base=2) ** 2
    assert compare_binned(ref, win).js[0] == pytest.approx(expected, rel=1e-10)


def test_binned_ks_equals_scipy_ks_when_each_value_has_its_own_bin() -> None:
    rng = np.random.default_rng(1)
    reference = rng.integers(0, 6, 2000).astype(float)
    window = rng.integers(1, 7, 150).astype(float)
    profile = ReferenceProfile.from_data(reference[:, None], np.zeros(2000, int), 1)
    result = compare_binned(profile.counts, profile.bin_counts(window[:, None]), profile.n_bins)
    assert result.ks[0] == pytest.approx(stats.ks_2samp(reference, window).statistic, abs=1e-12)


def test_cut_points_are_monotone_and_bins_cover_everything() -> None:
    rng = np.random.default_rng(2)
    X = np.column_stack([rng.normal(size=500), np.zeros(500), rng.integers(0, 3, 500)])
    profile = ReferenceProfile.from_data(X, np.zeros(500, int), 2, max_bins=10)
    assert profile.counts.sum(axis=1).tolist() == [500.0, 500.0, 500.0]
    for j in range(3):
        cuts = profile.cuts[j, : profile.n_bins[j] - 1]
        assert np.all(np.diff(cuts) > 0)
    assert profile.n_bins.tolist() == [10, 3, 3]
    # a value the constant feature never took lands in an empty reference bin
    assert profile.bin_counts(np.array([[0.0, 5.0, 1.0]]))[1].tolist()[:3] == [0, 0, 1]
    assert cut_points(np.array([1.0, 2.0])).tolist() == [1.5]


@pytest.mark.parametrize("window", [100, 500])
def test_false_alarm_rate_stays_near_alpha_for_small_windows(window: int) -> None:
    """Under no drift, per-feature alarms at alpha=0.05 occur about 5% of the time."""
    rng = np.random.default_rng(3)
    reference = np.column_stack(
        [rng.normal(size=20_000), rng.exponential(size=20_000), rng.integers(0, 5, 20_000)]
    )
    profile = ReferenceProfile.from_data(reference, np.zeros(20_000, int), 2)
    alarms = []
    for _ in range(400):
        sample = np.column_stack(
            [rng.normal(size=window), rng.exponential(size=window), rng.integers(0, 5, window)]
        )
        result = compare_binned(profile.counts, profile.bin_counts(sample), profile.n_bins)
        alarms.append(result.drifted(0.05))
    rate = np.mean(alarms)
    assert 0.02 <= rate <= 0.09, rate
    # an uncalibrated rule of thumb ("PSI > 0.1 means drift") cries wolf far more often here
    naive = []
    for _ in range(100):
        sample = rng.normal(size=(window, 1))
        naive.append(
            compare_binned(
                profile.counts[:1],
                profile.bin_counts(np.column_stack([sample, np.zeros((window, 2))]))[:1],
                profile.n_bins[:1],
            ).psi[0]
            > 0.1
        )
    if window == 100:
        assert np.mean(naive) > 0.2


def test_a_mean_shift_is_detected_in_a_100_event_window() -> None:
    rng = np.random.default_rng(4)
    profile = ReferenceProfile.from_data(rng.normal(size=(5000, 1)), np.zeros(5000, int), 2)
    shifted = rng.normal(0.5, 1.0, size=(100, 1))
    result = compare_binned(profile.counts, profile.bin_counts(shifted), profile.n_bins)
    assert result.drifted(0.01)[0]


def test_digits_shift_is_detected_and_the_source_holdout_is_not(digits_bundle) -> None:
    from streamapp.model.bundle import load_bundle

    bundle = load_bundle(digits_bundle)
    scenario = get_scenario("digits-shift")
    monitor = DriftMonitor(
        bundle.reference, scenario.feature_names, scenario.classes, window_events=100, alpha=0.01
    )
    X_source, _ = scenario.source_data()
    rng = np.random.default_rng(5)
    monitor.update_events(
        X_source[rng.choice(len(X_source), 100)], np.zeros(100, int), np.zeros(100)
    )
    calm = monitor.report(0.0)
    X_target, _, _ = scenario.target_data(400)
    monitor.update_events(X_target[:100], np.zeros(100, int), np.zeros(100))
    drifted = monitor.report(1.0)
    assert not calm["dataset"]["drifted"]
    assert calm["dataset"]["drifted_share"] < 0.15
    assert drifted["dataset"]["drifted"]
    assert drifted["dataset"]["drifted_share"] > 0.5


def test_rolling_performance_matches_hand_counts() -> None:
    perf = RollingPerformance(n_classes=3, window=4)
    y = np.array([0, 1, 2, 2, 1])
    proba = np.eye(3)[[0, 1, 1, 2, 0]] * 0.8 + 0.2 / 3
    perf.update(y, proba, source_pred=np.array([0, 0, 0, 0, 0]), delays=np.array([1, 2, 3, 4, 5.0]))
    s = perf.summary()
    # the window keeps the last 4: truths [1, 2, 2, 1], predictions [1, 1, 2, 0]
    assert s["labels"] == 4 and s["labels_total"] == 5
    assert s["accuracy"] == pytest.approx(0.5)
    assert s["source_accuracy"] == 0.0
    assert s["confusion"] == [[0, 0, 0], [1, 1, 0], [0, 1, 1]]
    expected_loss = -np.mean(np.log([0.8 + 0.2 / 3, 0.2 / 3, 0.8 + 0.2 / 3, 0.2 / 3]))
    assert s["log_loss"] == pytest.approx(expected_loss)
    assert s["label_delay_s"]["p50"] == pytest.approx(3.5)


def test_error_detectors_fire_after_a_change_and_not_before() -> None:
    rng = np.random.default_rng(6)
    detectors = ErrorDetectors()
    detectors.update(rng.random(2000) < 0.1)
    calm = detectors.summary()
    detectors.update(rng.random(2000) < 0.6)
    changed = detectors.summary()
    assert calm["adwin"]["total"] == 0
    assert changed["adwin"]["drift_detected"]
    assert all(2000 < point <= 4000 for point in changed["adwin"]["change_points"])
    assert changed["page_hinkley"]["total"] >= 1


@pytest.mark.parametrize("kind", ["errors", "drifting floats"])
def test_page_hinkley_finds_rivers_change_points_exactly_whatever_the_batches(kind: str) -> None:
    from river import drift

    rng = np.random.default_rng(11)
    if kind == "errors":  # error rates that move up and down: several changes, both sides
        rates = np.repeat([0.1, 0.7, 0.2, 0.9, 0.05], 3000)
        values = (rng.random(len(rates)) < rates).astype(np.float64)
    else:
        values = np.concatenate([rng.normal(m, 3.0, 2500) for m in (0.0, 4.0, -3.0, 8.0)])
    river_ph, expected = drift.PageHinkley(threshold=20.0), []
    for i, x in enumerate(values.tolist(), 1):
        river_ph.update(x)
        if river_ph.drift_detected:
            expected.append(i)
    ours, found, seen = PageHinkley(threshold=20.0), [], 0
    for batch in np.array_split(values, np.sort(rng.choice(len(values), 40, replace=False))):
        found += [seen + i for i in ours.update_many(batch.tolist())]
        seen += len(batch)
    assert len(expected) >= 3
    assert found == expected


def test_bin_counts_are_each_features_histogram_on_its_cuts() -> None:
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(500, 4)) * [1.0, 5.0, 0.1, 2.0]
    profile = ReferenceProfile.from_data(reference, np.zeros(500, np.int64), 1, max_bins=6)
    X = rng.normal(size=(300, 4)) * 3
    X[:4] = profile.cuts[:, :4].T  # values on the cuts: the bin above
    counts = profile.bin_counts(X.astype(np.float32))
    for f in range(4):
        cuts = profile.cuts[f]
        index = np.searchsorted(cuts, X[:, f].astype(np.float32).astype(np.float64), "right")
        expected = np.bincount(index, minlength=cuts.size + 1)
        np.testing.assert_array_equal(counts[f], expected)
    assert counts.sum() == 300 * 4


def _cursor_monitor() -> DriftMonitor:
    rng = np.random.default_rng(8)
    profile = ReferenceProfile.from_data(rng.normal(size=(500, 3)), np.zeros(500, np.int64), 2)
    return DriftMonitor(profile, ["a", "b", "c"], ["x", "y"], window_events=100)


def _feed(monitor: DriftMonitor, X: np.ndarray, labels: int) -> list[dict]:
    """One batch as the pipeline gives it: its events, its joined labels, a report if due."""
    monitor.update_events(X, (X[:, 0] > 0).astype(np.int64), np.arange(len(X), dtype=float))
    y = np.zeros(labels, np.int64)
    monitor.update_labels(y, np.full((labels, 2), 0.5), y, np.ones(labels))
    return [monitor.report(0.0)] if monitor.due(0.0) else []


def test_a_replay_in_other_batches_resumes_after_the_last_committed_report() -> None:
    X = np.random.default_rng(9).normal(size=(330, 3))
    original, restored = _cursor_monitor(), _cursor_monitor()
    _feed(original, X[:40], 10)
    restored.load_state_dict(original.state_dict())  # the snapshot
    reports = [r for a, b in ((40, 90), (90, 150), (150, 240)) for r in _feed(original, X[a:b], 30)]
    committed = original.cursor()  # the commit after the 240th event
    assert [r["window"]["events"] for r in reports] == [150] and committed.events == 150
    # the replay: the same inputs in one batch, then live
    restored.resume(committed)
    assert _feed(restored, X[40:240], 90) == []
    for monitor in (original, restored):
        _feed(monitor, X[240:330], 20)
    assert restored.reports == original.reports == 2
    assert restored.state_dict().keys() == original.state_dict().keys()
    for name in ("_feature_counts", "_class_counts", "_sum", "_events", "_labels", "_cut_events"):
        np.testing.assert_array_equal(restored.state_dict()[name], original.state_dict()[name])


def test_a_cursor_no_newer_than_the_snapshot_changes_nothing_and_a_short_replay_ends_the_skip() -> (
    None
):
    X = np.random.default_rng(10).normal(size=(300, 3))
    monitor = _cursor_monitor()
    assert len(_feed(monitor, X[:120], 5)) == 1
    before = monitor.state_dict()
    monitor.resume(monitor.cursor())
    assert monitor.state_dict().keys() == before.keys()
    assert monitor.events_in_window == 0 and monitor.reports == 1
    ahead = type(monitor.cursor())(reports=3, events=500, labels=50)
    monitor.resume(ahead)
    _feed(monitor, X[120:200], 5)
    assert monitor.events_in_window == 0  # counted by the committed reports
    monitor.replay_finished()  # the broker lost the rest of the replay: live counts again
    _feed(monitor, X[200:230], 5)
    assert monitor.events_in_window == 30 and monitor.cursor() == ahead
    restored = _cursor_monitor()
    restored.load_state_dict({k: v for k, v in monitor.state_dict().items() if k != "_cut_events"})
    assert restored.cursor().reports == 3  # a snapshot from before cursors still loads


def test_skipped_rows_still_count_in_the_imputed_total_and_a_new_bundle_numbers_on() -> None:
    X = np.random.default_rng(11).normal(size=(200, 3))
    X[:, 1] = np.nan  # every event imputes feature b
    original = _cursor_monitor()
    assert len(_feed(original, X[:120], 0)) == 1
    replay = _cursor_monitor()
    replay.resume(original.cursor())
    replay_report = (_feed(replay, X[:200], 0) or [replay.report(0.0)])[0]
    later = (_feed(original, X[120:200], 0) or [original.report(0.0)])[0]
    assert replay_report["imputed"]["total"]["b"] == later["imputed"]["total"]["b"] == 200
    assert replay_report["window"]["events"] == later["window"]["events"] == 80
    swapped = _cursor_monitor()
    swapped.continue_from(original)
    assert swapped.cursor() == original.cursor() and swapped.events_in_window == 0
    assert [r["report_seq"] for r in _feed(swapped, X[:100], 0)] == [original.reports + 1]
