"""``train-source --data``: a user's file in, a bundle out; failures are one line and exit 2,
checked before any training, and leave nothing behind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.cli import main
from streamapp.model.bundle import load_bundle

FAST = ["--epochs", "2", "--hidden", "8", "--embedding-dim", "4"]


def write_csv(path: Path, rows: list[str]) -> Path:
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture
def source_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 3)) * [1.0, 100.0, 0.01]
    labels = np.where(X[:, 0] > 0, "yes", "no")
    rows = ["x,big,tiny,answer"] + [
        f"{a},{b},{c},{y}" for (a, b, c), y in zip(X, labels, strict=True)
    ]
    return write_csv(tmp_path / "source.csv", rows)


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.err + captured.out).splitlines() if line.strip()]


def test_a_csv_becomes_a_bundle(source_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "models" / "answer" / "1"
    args = ["train-source", "--data", str(source_csv), "--label-column", "answer"]
    args += ["--feature-columns", "x,big", "--test-fraction", "0.25", "--name", "answer"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    bundle = load_bundle(out)
    m = bundle.manifest
    assert (m.name, m.feature_names, m.classes) == ("answer", ["x", "big"], ["no", "yes"])
    assert m.architecture == {"name": "mlp", "hidden": [8]} and m.embedding_dim == 4
    assert m.source_metrics["test_size"] == 20 and "test_macro_f1" in m.source_metrics
    # no floor on the std: a feature of scale 100 is standardized by its own std
    assert 50 < m.preprocessing["std"][1] < 200


@pytest.mark.parametrize(
    ("rows", "extra", "message"),
    [
        (["a,label", "1,x", "2,x"], [], "at least 2"),
        (["a,label", "1,x", "hello,y"], [], "column 'a' is not numeric"),
        (["a,label", "1,x", "2,y"], ["--feature-columns", "a,b"], "no column 'b'"),
        (["a,label", "1,x", ",y"], [], "missing feature values"),
        (["\x00\x01garbage"], [], "no column 'label'"),
    ],
)
def test_bad_inputs_exit_2_with_one_line_and_leave_nothing(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    rows: list[str],
    extra: list[str],
    message: str,
) -> None:
    data = write_csv(tmp_path / "d.csv", rows)
    out = tmp_path / "models" / "m" / "1"
    args = ["train-source", "--data", str(data), "--label-column", "label", "--out", str(out)]
    assert main([*args, *FAST, *extra]) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and message in shown[0], shown
    assert not out.exists()
    parent = tmp_path / "models" / "m"
    assert not parent.exists() or not list(parent.iterdir())  # no hidden staging directory


def test_an_existing_out_is_refused_before_reading_or_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamapp.model.training as training

    def no_training(*args: object, **kwargs: object) -> None:
        raise AssertionError("trained although --out exists")

    monkeypatch.setattr(training, "train_source", no_training)
    out = tmp_path / "existing"
    out.mkdir()
    missing = tmp_path / "not-read-either.csv"
    args = ["train-source", "--data", str(missing), "--label-column", "y", "--out", str(out)]
    assert main(args) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and "already exists" in shown[0]
    assert main(["train-source", "--scenario", "hyperplane", "--out", str(out)]) == 2


def test_a_failed_write_leaves_no_staging_directory(
    source_csv: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import streamapp.model.bundle as bundle_module

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(bundle_module, "save_backbone", broken)
    out = tmp_path / "models" / "1"
    args = ["train-source", "--data", str(source_csv), "--label-column", "answer"]
    with pytest.raises(OSError, match="disk full"):
        main([*args, "--out", str(out), *FAST])
    assert list((tmp_path / "models").iterdir()) == []


def test_an_unknown_scenario_is_one_line_pointing_at_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["train-source", "--scenario", str(tmp_path / "x.csv"), "--out", str(tmp_path / "o")]
    assert main(args) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and "unknown scenario" in shown[0] and "--data FILE" in shown[0]
