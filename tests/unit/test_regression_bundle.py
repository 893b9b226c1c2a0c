"""Regression bundles (issue 34): ``train-source`` / ``models import --task regression`` write
a bundle that says its task, with a one-row head, source MAE/RMSE/R² and predicted-value bins
in its reference profile; inconsistent ones are refused in one line; classification bundles,
old manifests and old reference profiles load exactly as before; ``produce`` sends numbers."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest
import torch

from streamapp.cli import main
from streamapp.datasets import load_table
from streamapp.drift.stats import ReferenceProfile
from streamapp.errors import BundleError, DataError
from streamapp.model.backbone import Embedder, MLPBackbone
from streamapp.model.bundle import Bundle, load_bundle, sha256_file
from streamapp.model.training import holdout_split
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import table_records

FAST = ["--epochs", "3", "--hidden", "32", "--embedding-dim", "16"]


def lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.err + captured.out).splitlines() if line.strip()]


def predicted_values(bundle: Bundle, X: np.ndarray) -> np.ndarray:
    """The bundle's source model on ``X``, computed the way the worker embeds."""
    m = bundle.manifest
    embed = Embedder(
        bundle.backbone,
        np.asarray(m.preprocessing["mean"]),
        np.asarray(m.preprocessing["std"]),
        input_shape=m.input_shape,
    )
    return embed(np.asarray(X, np.float32)) @ bundle.head_coef[0] + bundle.head_intercept[0]


def rewrite(bundle: Path, name: str, **arrays: np.ndarray) -> None:
    """Replace ``name`` with ``arrays`` and give it a valid checksum (only the checks of what
    is inside can refuse it)."""
    np.savez(bundle / name, **arrays)
    manifest = orjson.loads((bundle / "manifest.json").read_bytes())
    manifest["files"][name] = sha256_file(bundle / name)
    (bundle / "manifest.json").write_bytes(orjson.dumps(manifest))


@pytest.fixture(scope="module")
def friedman_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("reg") / "friedman" / "1"
    assert main(["train-source", "--task", "regression", "--out", str(out), *FAST]) == 0
    return out


def test_train_source_regression_writes_a_consistent_regression_bundle(
    friedman_bundle: Path,
) -> None:
    bundle = load_bundle(friedman_bundle)
    m, ref = bundle.manifest, bundle.reference
    assert (m.name, m.task, m.classes, m.input_dim) == ("friedman-shift", "regression", [], 10)
    assert bundle.head_coef.shape == (1, 16) and bundle.head_intercept.shape == (1,)
    metrics = m.source_metrics
    assert (metrics["train_size"], metrics["test_size"]) == (4000, 1000)
    # the holdout (noise sd 1 on a target of sd ~5): far better than predicting the mean
    assert metrics["source_r2"] > 0.5, metrics
    assert 0 < metrics["source_mae"] <= metrics["source_rmse"] < 2.5, metrics
    X, y = get_scenario("friedman-shift").source_data()
    train, test = holdout_split(len(X), 0.2, 0)
    pred = predicted_values(bundle, X)
    assert metrics["source_mae"] == pytest.approx(np.abs(pred[test] - y[test]).mean())
    # predicted-value bins: 9 increasing cuts, the training share's predictions counted on
    # them with a value equal to a cut in the bin above (side="right")
    cuts = ref.prediction_cuts
    assert cuts.ndim == 1 and len(cuts) == 9 and np.all(np.diff(cuts) > 0)
    assert y.min() < cuts[0] and cuts[-1] < y.max()
    expected = np.bincount(np.searchsorted(cuts, pred[train], side="right"), minlength=10)
    np.testing.assert_array_equal(ref.prediction_counts, expected)
    assert ref.prediction_counts.sum() == 4000


def test_the_friedman_scenario_alone_implies_regression_and_a_mismatch_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "f"
    assert main(["train-source", "--scenario", "friedman-shift", "--out", str(out), *FAST]) == 0
    assert load_bundle(out).manifest.task == "regression"
    assert "source_r2" in lines(capsys)[-1]
    bad = ["train-source", "--scenario", "digits-shift", "--task", "regression"]
    assert main([*bad, "--out", str(tmp_path / "d"), *FAST]) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and "digits-shift is a classification scenario" in shown[0], shown
    assert not (tmp_path / "d").exists()


@pytest.fixture
def numeric_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(3)
    X = rng.normal(size=(300, 3)) * [1.0, 10.0, 0.1]
    y = 3 * X[:, 0] - 0.2 * X[:, 1] + 20 * X[:, 2] + 100 + rng.normal(0, 0.3, 300)
    rows = ["a,b,c,price"] + [f"{a},{b},{c},{t}" for (a, b, c), t in zip(X, y, strict=True)]
    path = tmp_path / "prices.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_train_source_data_with_a_numeric_label_column(numeric_csv: Path, tmp_path: Path) -> None:
    out = tmp_path / "prices" / "1"
    args = ["train-source", "--data", str(numeric_csv), "--label-column", "price"]
    assert main([*args, "--task", "regression", "--out", str(out), "--epochs", "30"]) == 0
    bundle = load_bundle(out)
    m = bundle.manifest
    assert (m.name, m.task, m.classes, m.feature_names) == ("prices", "regression", [], list("abc"))
    assert m.source_metrics["source_r2"] > 0.5, m.source_metrics
    table = load_table(numeric_csv, "price", task="regression")
    _, test = holdout_split(len(table), 0.2, 0)
    rmse = np.sqrt(((predicted_values(bundle, table.X[test]) - table.y[test]) ** 2).mean())
    assert m.source_metrics["source_rmse"] == pytest.approx(rmse)


@pytest.mark.parametrize(
    ("label", "message"),
    [("cheap", "column 'price' is not numeric"), ("", "'price' has empty values")],
)
def test_a_label_that_is_not_a_number_is_one_line_for_regression(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], label: str, message: str
) -> None:
    data = tmp_path / "d.csv"
    data.write_text(f"a,price\n1,2.5\n2,{label}\n3,4\n")
    out = tmp_path / "m"
    args = ["train-source", "--data", str(data), "--label-column", "price", "--task"]
    assert main([*args, "regression", "--out", str(out), *FAST]) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and message in shown[0], shown
    assert not out.exists()


def test_tables_with_numeric_targets_from_csv_and_npz(tmp_path: Path) -> None:
    csv_path = tmp_path / "d.csv"
    csv_path.write_text("a,y\n1,2.5\n2,-1e3\n")
    table = load_table(csv_path, "y", task="regression")
    assert (table.y.tolist(), table.classes, table.task) == ([2.5, -1000.0], [], "regression")
    assert load_table(csv_path, "y").classes == ["-1e3", "2.5"]  # a classifier: names
    np.savez(tmp_path / "d.npz", X=np.ones((2, 2)), y=np.array([0.5, 7.0]))
    assert load_table(tmp_path / "d.npz", "y", task="regression").y.tolist() == [0.5, 7.0]
    np.savez(tmp_path / "s.npz", X=np.ones((2, 2)), y=np.array(["a", "b"]))
    with pytest.raises(DataError, match="'y' must hold numbers"):
        load_table(tmp_path / "s.npz", "y", task="regression")


def test_models_import_regression_fits_ridge_on_the_embeddings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from safetensors.torch import save_file

    rng = np.random.default_rng(4)
    X = rng.normal(size=(400, 6))
    with torch.random.fork_rng():
        torch.manual_seed(0)  # every embedding unit alive on this data (ReLU units can die)
        net = MLPBackbone(6, [8], 4).eval()
    with torch.inference_mode():
        Z = net(torch.tensor((X - X.mean(0)) / X.std(0), dtype=torch.float32)).numpy()
    assert (Z.std(axis=0) > 0.05).all()
    w = np.array([2.0, -1.0, 0.5, 3.0])
    y = Z @ w + 7.0 + rng.normal(0, 0.01, 400)  # a target the embeddings express
    rows = [",".join([*(f"f{j}" for j in range(6)), "target"])]
    rows += [",".join(map(str, [*x, t])) for x, t in zip(X.tolist(), y, strict=True)]
    (tmp_path / "d.csv").write_text("\n".join(rows) + "\n")
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    base = ["models", "import", "--backbone", str(tmp_path / "net.safetensors")]
    base += ["--data", str(tmp_path / "d.csv"), "--label-column", "target", "--task", "regression"]
    assert main([*base, "--out", str(tmp_path / "b")]) == 0
    bundle = load_bundle(tmp_path / "b")
    assert (bundle.manifest.task, bundle.manifest.classes) == ("regression", [])
    assert bundle.manifest.backbone_format == "safetensors"
    np.testing.assert_allclose(bundle.head_coef, [w], rtol=0.05)  # ridge shrinks a little
    np.testing.assert_allclose(bundle.head_intercept, [7.0], atol=0.05)
    assert bundle.manifest.source_metrics["source_r2"] > 0.99
    assert bundle.reference.prediction_counts.sum() == 320
    # a given head.npz is kept as it is; two rows are refused in one line
    np.savez(tmp_path / "head.npz", coef=np.ones((1, 4)), intercept=np.array([0.5]))
    assert main([*base, "--head", str(tmp_path / "head.npz"), "--out", str(tmp_path / "h")]) == 0
    given = load_bundle(tmp_path / "h")
    assert given.head_coef.tolist() == [[1.0] * 4] and given.head_intercept.tolist() == [0.5]
    capsys.readouterr()
    np.savez(tmp_path / "two.npz", coef=np.ones((2, 4)), intercept=np.zeros(2))
    assert main([*base, "--head", str(tmp_path / "two.npz"), "--out", str(tmp_path / "t")]) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and "expected coef (1, 4)" in shown[0], shown
    assert not (tmp_path / "t").exists()


def test_a_regression_bundle_with_two_head_rows_is_refused_in_one_line(
    friedman_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(friedman_bundle, copy)
    rewrite(copy, "head.npz", coef=np.zeros((2, 16)), intercept=np.zeros(2))
    with pytest.raises(BundleError, match=r"expected \(1, 16\) for a regression bundle") as info:
        load_bundle(copy)
    assert "\n" not in str(info.value)
    assert main(["models", "verify", str(copy)]) == 2
    assert len(lines(capsys)) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"classes": ["low", "high"]}, "a regression bundle has no classes, this one 2"),
        ({"task": "ranking"}, "unknown task 'ranking'"),
        ({"task": "classification"}, "fewer than 2 classes"),
    ],
)
def test_a_manifest_that_contradicts_its_task_is_refused(
    friedman_bundle: Path, tmp_path: Path, change: dict[str, object], message: str
) -> None:
    copy = tmp_path / "b"
    shutil.copytree(friedman_bundle, copy)
    manifest = orjson.loads((copy / "manifest.json").read_bytes())
    (copy / "manifest.json").write_bytes(orjson.dumps({**manifest, **change}))
    with pytest.raises(BundleError, match=message):
        load_bundle(copy)


def test_prediction_bins_must_fit_the_task(friedman_bundle: Path, tmp_path: Path) -> None:
    copy = tmp_path / "b"
    shutil.copytree(friedman_bundle, copy)
    arrays = load_bundle(copy).reference.as_arrays()
    rewrite(copy, "reference.npz", **{**arrays, "prediction_cuts": arrays["prediction_cuts"][::-1]})
    with pytest.raises(BundleError, match="features/predicted-value bins"):
        load_bundle(copy)


@pytest.fixture(scope="module")
def classifier_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cls")
    rng = np.random.default_rng(0)
    X = rng.normal(size=(80, 2))
    rows = ["a,b,label"] + [f"{a},{b},{'yes' if a > 0 else 'no'}" for a, b in X]
    (root / "d.csv").write_text("\n".join(rows) + "\n")
    out = root / "b"
    args = ["train-source", "--data", str(root / "d.csv"), "--label-column", "label"]
    assert main([*args, "--out", str(out), *FAST]) == 0
    return out


def test_an_old_classifier_bundle_without_task_or_prediction_cuts_loads_as_before(
    classifier_bundle: Path, tmp_path: Path
) -> None:
    fresh = load_bundle(classifier_bundle)
    assert fresh.manifest.task == "classification" and fresh.reference.prediction_cuts.size == 0
    assert orjson.loads((classifier_bundle / "manifest.json").read_bytes())["task"] == (
        "classification"
    )
    old = tmp_path / "old"
    shutil.copytree(classifier_bundle, old)
    manifest = orjson.loads((old / "manifest.json").read_bytes())
    del manifest["task"]
    (old / "manifest.json").write_bytes(orjson.dumps(manifest))
    arrays = fresh.reference.as_arrays()
    del arrays["prediction_cuts"]  # as reference.npz was written before regression bundles
    rewrite(old, "reference.npz", **arrays)
    bundle = load_bundle(old)
    assert bundle.manifest.task == "classification" and bundle.manifest.classes == ["no", "yes"]
    assert bundle.reference.prediction_cuts.shape == (0,)
    np.testing.assert_array_equal(
        bundle.reference.prediction_counts, fresh.reference.prediction_counts
    )
    np.testing.assert_array_equal(bundle.head_coef, fresh.head_coef)
    # a classifier's prediction bins are per class: cuts in its profile are refused
    rewrite(old, "reference.npz", **{**arrays, "prediction_cuts": np.array([0.5])})
    with pytest.raises(BundleError, match="features/classes"):
        load_bundle(old)


def test_a_value_equal_to_a_prediction_cut_is_counted_in_the_bin_above() -> None:
    X = np.zeros((6, 1))
    constant = ReferenceProfile.from_regression(X, np.full(6, 4.0))
    assert constant.prediction_cuts[0] == 4.0
    assert constant.prediction_counts.tolist() == [0.0, 6.0, 0.0]
    values = np.random.default_rng(1).normal(size=1000)
    profile = ReferenceProfile.from_regression(np.zeros((1000, 1)), values, max_bins=5)
    assert len(profile.prediction_cuts) == 4
    assert profile.prediction_counts.tolist() == [200.0] * 5


def test_the_regression_scenario_streams_numeric_feedback() -> None:
    scenario = get_scenario("friedman-shift")
    records = list(stream(scenario, 50, rate=100, label_delay_s=0.05, seed=2, start_ts=0))
    events = [r.value for r in records if r.kind == "features"]
    feedback = {r.key: r.value for r in records if r.kind == "feedback"}
    _, y, _ = scenario.target_data(50)
    assert len(events) == len(feedback) == 50 and len(events[0]["features"]) == 10
    for i, event in enumerate(events):
        label = feedback[event["event_id"]]
        assert type(label["label"]) is float and label["label"] == y[i]
        assert label["ts"] > event["ts"]
    assert orjson.loads(orjson.dumps(feedback["e0"]))["label"] == y[0]  # a JSON number


def test_a_regression_table_replays_numeric_feedback(numeric_csv: Path) -> None:
    table = load_table(numeric_csv, "price", task="regression")
    records = list(table_records(table, start_ts=0, id_prefix="r"))
    labels = {r.key: r.value["label"] for r in records if r.kind == "feedback"}
    assert labels == {f"r{i}": value for i, value in enumerate(table.y.tolist())}
    assert all(type(value) is float for value in labels.values())


def test_produce_refuses_a_scenario_of_the_other_task_before_connecting(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["produce", "--scenario", "hyperplane", "--task", "regression"]) == 2
    shown = lines(capsys)
    assert len(shown) == 1 and "hyperplane is a classification scenario" in shown[0], shown
