"""Bring your own model and data, end to end on the broker, through the CLI only:
CSV -> train-source -> run -> produce --from-file -> every event predicted once, schema-valid."""

from __future__ import annotations

import csv
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from streamapp.cli import main
from streamapp.settings import Settings
from tests.conftest import WorkerProcesses, assert_valid, read_topic, wait_caught_up

pytestmark = pytest.mark.integration


def write_csv(path: Path, X: np.ndarray, y: np.ndarray, ids: list[str]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "f0", "f1", "f2", "kind"])
        for event_id, row, label in zip(ids, X.tolist(), y.tolist(), strict=True):
            writer.writerow([event_id, *("" if np.isnan(v) else v for v in row), label])
    return path


def test_a_csv_trained_model_serves_a_replayed_file(
    tmp_path: Path,
    make_settings: Callable[..., Settings],
    workers: WorkerProcesses,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 3))
    y = np.where(X[:, 0] + X[:, 1] > 0, "up", "down")
    source = write_csv(tmp_path / "source.csv", X, y, [f"s{i}" for i in range(200)])
    target_X = rng.normal(size=(120, 3)) + np.array([0.5, 0.0, 0.0])  # shifted
    target_y = np.where(target_X[:, 0] + target_X[:, 1] > 0, "up", "down")
    target_X[::10, 2] = np.nan  # 12 events with a missing value, imputed
    target = write_csv(tmp_path / "target.csv", target_X, target_y, [f"t{i}" for i in range(120)])

    bundle = tmp_path / "models" / "kind" / "1"
    train = ["train-source", "--data", str(source), "--label-column", "kind"]
    train += ["--feature-columns", "f0,f1,f2", "--epochs", "3", "--hidden", "8"]
    assert main([*train, "--embedding-dim", "4", "--out", str(bundle)]) == 0

    settings = make_settings(
        partitions=2, bundle=bundle, missing="impute", **{"drift.window_events": 60}
    )
    workers.start(settings)
    monkeypatch.setenv("STREAMAPP_TOPICS__FEATURES", settings.topics.features)
    monkeypatch.setenv("STREAMAPP_TOPICS__FEEDBACK", settings.topics.feedback)
    produce = ["produce", "-b", str(settings.kafka.bootstrap_servers), "--from-file", str(target)]
    produce += ["--label-column", "kind", "--id-column", "id", "--feature-columns", "f0,f1,f2"]
    assert main([*produce, "--label-delay", "0.05", "--rate", "2000"]) == 0

    predictions = read_topic(settings, settings.topics.predictions, expected=120, timeout=90)
    ids = Counter(doc["event_id"] for _, doc in predictions)
    assert set(ids) == {f"t{i}" for i in range(120)} and max(ids.values()) == 1
    for key, doc in predictions:
        assert_valid("prediction", doc)
        assert key == doc["event_id"].encode() and doc["label"] in ("down", "up")
    wait_caught_up(settings)
    reports = read_topic(settings, settings.topics.drift, expected=2, timeout=30)
    for _, report in reports:
        assert_valid("drift-report", report)
    assert reports[-1][1]["imputed"]["total"]["f2"] == 12
    # input adaptation and model selection (on by default) ran on the CLI path too (issue 33)
    assert {doc["model"]["state"] for _, doc in predictions} <= {"adapted", "source", "scratch"}
    candidates = reports[-1][1]["model"]["candidates"]
    assert candidates["adapt"]["events"] > 0 and candidates["selection"]["window_labels"] > 0
    assert not read_topic(settings, settings.topics.dead_letter, timeout=2, idle=1)
