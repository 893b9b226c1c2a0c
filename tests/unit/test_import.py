"""``models import``: a user's .pt2 / .onnx / .safetensors feature extractor becomes a bundle
that embeds exactly like the original module; files that would unpickle code are refused."""

from __future__ import annotations

import csv
import json
import pickle
import re
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamapp.assembly import build_pipeline
from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.cli import main
from streamapp.codec import DecodedBatch
from streamapp.datasets import load_table
from streamapp.errors import BundleError, ConfigError
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.model.backbone import CNNBackbone, MLPBackbone
from streamapp.model.bundle import load_bundle
from streamapp.model.importer import import_bundle
from streamapp.model.variants import export_onnx as export_onnx_variant
from streamapp.model.variants import make_embedder
from streamapp.settings import Settings

D, K = 6, 4


@pytest.fixture
def data_csv(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, D)) * [1, 10, 100, 0.1, 1, 5] + [0, 5, 50, 0, 1, -3]
    y = (X[:, 0] + X[:, 3] * 10 > 0).astype(int) + (X[:, 1] > 5)
    path = tmp_path / "source.csv"
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow([f"f{j}" for j in range(D)] + ["label"])
        writer.writerows([*row, f"c{label}"] for row, label in zip(X.tolist(), y, strict=True))
    return path


def user_net() -> nn.Module:
    torch.manual_seed(1)
    return nn.Sequential(nn.Linear(D, 8), nn.Tanh(), nn.Linear(8, K)).eval()


def export_pt2(net: nn.Module, example: torch.Tensor, path: Path) -> Path:
    batch = torch.export.Dim("batch")
    program = torch.export.export(net, (example,), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    return path


def export_onnx(net: nn.Module, example: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        torch.onnx.export(
            net,
            (example,),
            str(path),
            input_names=["x"],
            dynamic_axes={"x": {0: "batch"}},
            dynamo=False,
        )
    return path


def standardized(X: np.ndarray) -> np.ndarray:
    std = X.std(axis=0)
    return (X - X.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_an_imported_backbone_embeds_like_the_original_module(
    fmt: str, data_csv: Path, tmp_path: Path
) -> None:
    net = user_net()
    example = torch.zeros(3, D)
    exporter = export_pt2 if fmt == "pt2" else export_onnx
    backbone = exporter(net, example, tmp_path / f"net.{fmt}")
    table = load_table(data_csv, "label")
    manifest = import_bundle(backbone, table, tmp_path / "b", name="net")
    bundle = load_bundle(tmp_path / "b")
    assert manifest.backbone_format == {"pt2": "torch.export", "onnx": "onnx"}[fmt]
    assert set(manifest.files) == {f"backbone.{fmt}", "head.npz", "reference.npz"}
    assert manifest.classes == ["c0", "c1", "c2"] and manifest.embedding_dim == K
    for key in ("test_accuracy", "test_macro_f1", "train_accuracy"):
        assert 0.0 <= manifest.source_metrics[key] <= 1.0
    assert bundle.reference.prediction_counts.sum() == manifest.source_metrics["train_size"]
    with torch.inference_mode():
        expected = net(torch.tensor(standardized(table.X), dtype=torch.float32)).numpy()
    embed = make_embedder(bundle)
    np.testing.assert_allclose(embed(table.X), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(embed(table.X[:1]), expected[:1], rtol=1e-4, atol=1e-5)


def test_an_onnx_model_with_external_data_is_bundled_as_one_file(
    data_csv: Path, tmp_path: Path
) -> None:
    """torch.onnx.export keeps large weights in a data file beside the model by default; the
    bundle copied only the model and was then refused (and left on disk)."""
    onnx = pytest.importorskip("onnx")
    net = user_net()
    exported = export_onnx(net, torch.zeros(3, D), tmp_path / "single.onnx")
    (user := tmp_path / "user").mkdir()
    onnx.save_model(
        onnx.load(str(exported)),
        str(user / "net.onnx"),
        save_as_external_data=True,
        location="net.onnx.data",
        size_threshold=0,
    )
    table = load_table(data_csv, "label")
    manifest = import_bundle(user / "net.onnx", table, tmp_path / "b", name="net")
    assert set(manifest.files) == {"backbone.onnx", "head.npz", "reference.npz"}
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == [
        "backbone.onnx",
        "head.npz",
        "manifest.json",
        "reference.npz",
    ]
    with torch.inference_mode():
        expected = net(torch.tensor(standardized(table.X), dtype=torch.float32)).numpy()
    embed = make_embedder(load_bundle(tmp_path / "b"))
    np.testing.assert_allclose(embed(table.X), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fmt", ["pt2", "onnx"])
def test_variants_an_imported_program_cannot_run_say_so_and_what_to_serve(
    fmt: str, data_csv: Path, tmp_path: Path
) -> None:
    """int8 ran a .pt2 or ONNX backbone unquantized, silently; onnx on a .pt2 bundle pointed
    to `models export`, which refuses a torch.export program."""
    exporter = export_pt2 if fmt == "pt2" else export_onnx
    backbone = exporter(user_net(), torch.zeros(3, D), tmp_path / f"net.{fmt}")
    import_bundle(backbone, load_table(data_csv, "label"), tmp_path / "b", name="net")
    bundle = load_bundle(tmp_path / "b")
    with pytest.raises(ConfigError, match="would run unquantized"):
        make_embedder(bundle, "int8")
    if fmt == "pt2":
        with pytest.raises(ConfigError, match=r"torch\.onnx\.export"):
            make_embedder(bundle, "onnx")
        with pytest.raises(BundleError, match=r"torch\.onnx\.export"):
            export_onnx_variant(tmp_path / "b")


def test_a_safetensors_mlp_is_read_as_the_builtin_architecture(
    data_csv: Path, tmp_path: Path
) -> None:
    from safetensors.torch import save_file

    net = MLPBackbone(D, [5], K).eval()
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    table = load_table(data_csv, "label")
    manifest = import_bundle(
        tmp_path / "net.safetensors", table, tmp_path / "b", name="n", standardize=False
    )
    assert manifest.architecture == {"name": "mlp", "hidden": [5]}
    with torch.inference_mode():
        expected = net(torch.tensor(table.X, dtype=torch.float32)).numpy()
    embed = make_embedder(load_bundle(tmp_path / "b"))
    np.testing.assert_allclose(embed(table.X), expected, rtol=1e-4, atol=1e-4)


def shaped_npz(path: Path, n: int = 60) -> Path:
    rng = np.random.default_rng(2)
    X = rng.normal(size=(n, 1, 4, 4)).astype(np.float32)
    y = (X[:, 0, :2].mean(axis=(1, 2)) > 0).astype(int)
    np.savez(path, X=X, y=y)
    return path


@pytest.mark.parametrize("fmt", ["pt2", "safetensors"])
def test_a_cnn_on_image_shaped_features(fmt: str, tmp_path: Path) -> None:
    """Events carry 16 flat values; the CNN sees (n, 1, 4, 4)."""
    from safetensors.torch import save_file

    torch.manual_seed(0)
    net = CNNBackbone(16, 3, [1, 4, 4], [2]).eval()
    if fmt == "pt2":
        backbone = export_pt2(net, torch.zeros(2, 1, 4, 4), tmp_path / "cnn.pt2")
    else:
        backbone = tmp_path / "cnn.safetensors"
        save_file(net.state_dict(), str(backbone))
    table = load_table(shaped_npz(tmp_path / "img.npz"), "y")
    shape = [1, 4, 4] if fmt == "safetensors" else None  # a shaped NPZ carries its shape
    manifest = import_bundle(
        backbone, table, tmp_path / "b", name="cnn", input_shape=shape, standardize=False
    )
    assert manifest.input_shape == [1, 4, 4] and manifest.input_dim == 16
    with torch.inference_mode():
        expected = net(torch.tensor(table.X, dtype=torch.float32).reshape(-1, 1, 4, 4)).numpy()
    embed = make_embedder(load_bundle(tmp_path / "b"))
    np.testing.assert_allclose(embed(table.X), expected, rtol=1e-4, atol=1e-5)


@pytest.mark.cuda
def test_a_cnn_bundle_embeds_on_cuda_like_on_cpu(tmp_path: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    torch.manual_seed(0)
    net = CNNBackbone(16, 3, [1, 4, 4], [2]).eval()
    backbone = export_pt2(net, torch.zeros(2, 1, 4, 4), tmp_path / "cnn.pt2")
    table = load_table(shaped_npz(tmp_path / "img.npz"), "y")
    import_bundle(backbone, table, tmp_path / "b", name="cnn", standardize=False)
    bundle = load_bundle(tmp_path / "b")
    on_cpu = make_embedder(bundle)(table.X)
    on_cuda = make_embedder(bundle, device="cuda")(table.X)
    np.testing.assert_allclose(on_cuda, on_cpu, rtol=1e-3, atol=1e-4)


def test_a_given_head_is_used_as_is(data_csv: Path, tmp_path: Path) -> None:
    coef, intercept = np.arange(3 * K, dtype=float).reshape(3, K), np.array([1.0, 2.0, 3.0])
    np.savez(tmp_path / "head.npz", coef=coef, intercept=intercept)
    backbone = export_pt2(user_net(), torch.zeros(3, D), tmp_path / "net.pt2")
    table = load_table(data_csv, "label")
    import_bundle(backbone, table, tmp_path / "b", name="n", head_path=tmp_path / "head.npz")
    bundle = load_bundle(tmp_path / "b")
    assert (bundle.head_coef == coef).all() and (bundle.head_intercept == intercept).all()
    np.savez(tmp_path / "bad.npz", coef=np.zeros((2, K)), intercept=np.zeros(2))
    with pytest.raises(BundleError, match=re.escape("expected coef (3, 4)")):
        import_bundle(backbone, table, tmp_path / "c", name="n", head_path=tmp_path / "bad.npz")


def test_a_skops_head_loads_with_the_trusted_list_only(data_csv: Path, tmp_path: Path) -> None:
    sio = pytest.importorskip("skops.io")
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from streamapp.model.importer import embed_all

    net = user_net()
    backbone = export_pt2(net, torch.zeros(3, D), tmp_path / "net.pt2")
    table = load_table(data_csv, "label")
    Z = embed_all(load_bundle_backbone(backbone), table.X, *scale(table.X), None)
    names = np.asarray(table.classes)[table.y]
    sio.dump(LogisticRegression(max_iter=500).fit(Z, names), tmp_path / "head.skops")
    import_bundle(backbone, table, tmp_path / "b", name="n", head_path=tmp_path / "head.skops")
    assert load_bundle(tmp_path / "b").head_coef.shape == (3, K)
    pipeline = make_pipeline(StandardScaler(), LogisticRegression()).fit(Z, names)
    sio.dump(pipeline, tmp_path / "p.skops")
    with pytest.raises(BundleError, match="holds a Pipeline, not one of the trusted"):
        import_bundle(backbone, table, tmp_path / "c", name="n", head_path=tmp_path / "p.skops")
    rigged = LogisticRegression(max_iter=500).fit(Z, names)
    rigged.extra = Counter("ab")  # a type outside skops' and our trusted lists
    sio.dump(rigged, tmp_path / "r.skops")
    with pytest.raises(BundleError, match=r"outside the trusted list.*collections\.Counter"):
        import_bundle(backbone, table, tmp_path / "d", name="n", head_path=tmp_path / "r.skops")


def load_bundle_backbone(path: Path) -> nn.Module:
    from streamapp.model.formats import load_backbone

    return load_backbone(path, "torch.export", {}, input_dim=D, embedding_dim=K)


def scale(X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from streamapp.model.training import source_scale

    return source_scale(X)


# -- refused: pickles, tampering, fixed batch sizes -------------------------------------------


def rewrite_member(archive: Path, target: Path, edit: dict[str, bytes]) -> Path:
    """A copy of the zip ``archive`` with members whose name ends in a key of ``edit`` replaced."""
    with zipfile.ZipFile(archive) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            for suffix, payload in edit.items():
                if info.filename.endswith(suffix):
                    data = payload
            dst.writestr(info, data)
    return target


class Boom:
    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (print, ("unpickled code ran",))


def test_a_pt2_with_pickled_weights_is_refused(tmp_path: Path) -> None:
    good = export_pt2(user_net(), torch.zeros(3, D), tmp_path / "good.pt2")
    with zipfile.ZipFile(good) as archive:
        name = next(n for n in archive.namelist() if n.endswith("model_weights_config.json"))
        config = json.loads(archive.read(name))
    first = next(iter(config["config"].values()))
    first["use_pickle"] = True
    evil = rewrite_member(
        good,
        tmp_path / "evil.pt2",
        {
            "model_weights_config.json": json.dumps(config).encode(),
            f"data/weights/{first['path_name']}": pickle.dumps(Boom()),
        },
    )
    from streamapp.model.formats import check_pt2

    with pytest.raises(BundleError, match="refused to unpickle") as caught:
        check_pt2(evil)
    assert "\n" not in str(caught.value)


def test_a_pt2_with_a_python_object_constant_is_refused(tmp_path: Path) -> None:
    good = export_pt2(user_net(), torch.zeros(3, D), tmp_path / "good.pt2")
    config = {"config": {"obj": {"path_name": "custom_obj_0", "use_pickle": True}}}
    evil = rewrite_member(
        good, tmp_path / "evil.pt2", {"model_constants_config.json": json.dumps(config).encode()}
    )
    from streamapp.model.formats import check_pt2

    with pytest.raises(BundleError, match="pickled Python object"):
        check_pt2(evil)


def test_a_pickle_named_safetensors_and_a_fixed_batch_export_are_refused(
    data_csv: Path, tmp_path: Path
) -> None:
    table = load_table(data_csv, "label")
    (tmp_path / "net.safetensors").write_bytes(pickle.dumps(Boom()))
    with pytest.raises(BundleError, match="not a safetensors file"):
        import_bundle(tmp_path / "net.safetensors", table, tmp_path / "a", name="n")
    program = torch.export.export(user_net(), (torch.zeros(3, D),))  # batch fixed at 3
    torch.export.save(program, str(tmp_path / "fixed.pt2"))
    with pytest.raises(BundleError, match="dynamic batch dimension"):
        import_bundle(tmp_path / "fixed.pt2", table, tmp_path / "b", name="n")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left


def test_an_imported_bundle_with_a_tampered_backbone_is_refused(
    data_csv: Path, tmp_path: Path
) -> None:
    backbone = export_pt2(user_net(), torch.zeros(3, D), tmp_path / "net.pt2")
    import_bundle(backbone, load_table(data_csv, "label"), tmp_path / "b", name="n")
    with (tmp_path / "b" / "backbone.pt2").open("ab") as handle:
        handle.write(b"\0")
    with pytest.raises(BundleError, match=r"checksum mismatch for backbone\.pt2"):
        load_bundle(tmp_path / "b")


def error_lines(capsys: pytest.CaptureFixture[str]) -> list[str]:
    captured = capsys.readouterr()
    return [line for line in (captured.err + captured.out).splitlines() if line.strip()]


def test_the_import_command_fails_in_one_line(
    data_csv: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "net.pkl").write_bytes(pickle.dumps(Boom()))
    args = ["models", "import", "--data", str(data_csv), "--label-column", "label"]
    out = str(tmp_path / "o")
    assert main([*args, "--backbone", str(tmp_path / "net.pkl"), "--out", out]) == 2
    lines = error_lines(capsys)
    assert len(lines) == 1 and "ERROR" in lines[0] and "unsupported backbone file" in lines[0]
    assert not (tmp_path / "o").exists()
    backbone = export_pt2(user_net(), torch.zeros(3, D), tmp_path / "net.pt2")
    out = tmp_path / "ok"
    assert main([*args, "--backbone", str(backbone), "--out", str(out)]) == 0
    assert main(["models", "verify", str(out)]) == 0


@pytest.mark.parametrize(("fmt", "head_kind"), [("pt2", "FinetuneHead"), ("onnx", "SGDHead")])
def test_an_imported_backbone_is_served_and_learns_with_the_default_settings(
    fmt: str, head_kind: str, data_csv: Path, tmp_path: Path
) -> None:
    """A .pt2 backbone is fine-tuned whole (finetune.layers=auto), an ONNX one learns in its
    head only; both serve, learn and survive a snapshot round trip."""
    exporter = export_pt2 if fmt == "pt2" else export_onnx
    backbone = exporter(user_net(), torch.zeros(3, D), tmp_path / f"net.{fmt}")
    table = load_table(data_csv, "label")
    import_bundle(backbone, table, tmp_path / "b", name="net")
    bundle = load_bundle(tmp_path / "b")
    settings = Settings(model={"bundle": tmp_path / "b"})
    pipeline = build_pipeline(settings, bundle)
    assert type(pipeline.head).__name__ == head_kind
    n = 100
    ids = [f"e{i}" for i in range(n)]
    block = FeatureBlock(
        ids,
        [None] * n,
        table.X[:n].astype(np.float32),
        np.full(n, 1.0),
        [SourcePosition("features", 0, i) for i in range(n)],
    )
    labels = [Feedback(ids[i], int(table.y[i]), 2.0) for i in range(n)]
    out = pipeline.process(DecodedBatch(block, feedback=labels))
    assert out.predictions is not None and len(out.predictions) == n
    assert pipeline.head.n_learned > 0
    restored = build_pipeline(settings, bundle)
    restored.load_state_dict(decode_state(encode_state(pipeline.state_dict())))
    X = table.X[n:].astype(np.float32)
    np.testing.assert_array_equal(
        restored.head.predict_proba_many(restored.embed(X)),
        pipeline.head.predict_proba_many(pipeline.embed(X)),
    )


def test_asking_an_onnx_backbone_for_fine_tuning_is_one_configuration_error(
    data_csv: Path, tmp_path: Path
) -> None:
    backbone = export_onnx(user_net(), torch.zeros(3, D), tmp_path / "net.onnx")
    import_bundle(backbone, load_table(data_csv, "label"), tmp_path / "b", name="net")
    settings = Settings(model={"bundle": tmp_path / "b"}, finetune={"layers": "all"})
    with pytest.raises(ConfigError, match="ONNX backbone is head-only"):
        build_pipeline(settings, load_bundle(tmp_path / "b"))
