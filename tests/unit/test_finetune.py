"""Online fine-tuning of the top layers: the cut, batch-invariant deterministic updates, and a
bitwise restore of weights and optimizer state through a pickle-free snapshot."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import DecodedBatch
from streamapp.drift.monitor import DriftMonitor
from streamapp.drift.stats import ReferenceProfile
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.ledger import PendingLedger
from streamapp.model.backbone import Embedder, MLPBackbone
from streamapp.model.finetune import FinetuneHead
from streamapp.model.surgery import cut_width, split_backbone
from streamapp.pipeline import Pipeline
from streamapp.settings import FinetuneSettings

N_FEATURES, N_CLASSES = 6, 3


def backbone() -> MLPBackbone:
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return MLPBackbone(N_FEATURES, [16], 8)


def small_top() -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(3)
        return nn.Sequential(nn.Linear(N_FEATURES, 8), nn.ReLU())


def data(n: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, N_FEATURES)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64) + (X[:, 1] > 0.5)
    return X, y


def head(top: nn.Module, width: int = 8, **kwargs: object) -> FinetuneHead:
    coef = np.random.default_rng(2).normal(size=(N_CLASSES, width))
    return FinetuneHead(top, coef, np.zeros(N_CLASSES), ["a", "b", "c"], **kwargs)  # type: ignore[arg-type]


def pipeline(layers: int | str = 1, optimizer: str = "adam") -> Pipeline:
    lower, top = split_backbone(backbone(), layers)  # type: ignore[arg-type]
    width = cut_width(lower, N_FEATURES)
    X, y = data(200, seed=9)
    monitor = DriftMonitor(
        ReferenceProfile.from_data(X, y, N_CLASSES), [f"x{i}" for i in range(N_FEATURES)],
        ["a", "b", "c"], window_events=10**9,
    )  # fmt: skip
    finetune = head(top, optimizer=optimizer, step_size=30)  # type: ignore[arg-type]
    return Pipeline(
        Embedder(lower, np.zeros(N_FEATURES), np.ones(N_FEATURES)),
        finetune,
        np.zeros((N_CLASSES, 8)),
        np.zeros(N_CLASSES),
        PendingLedger(1000, width, N_CLASSES, 1e9),
        monitor,
        model_name="m",
        model_version="1",
        clock=lambda: 0.0,
    )


def batches(X: np.ndarray, y: np.ndarray, sizes: list[int], first: int = 0) -> list[DecodedBatch]:
    """Events ``first..`` and their labels, cut into batches of ``sizes`` (cycled)."""
    out, start, k = [], first, 0
    while start < len(y):
        stop = min(start + sizes[k % len(sizes)], len(y))
        ids = [f"e{i}" for i in range(start, stop)]
        block = FeatureBlock(
            ids, [None] * len(ids), X[start:stop], np.zeros(len(ids)),
            [SourcePosition("features", 0, i) for i in range(start, stop)],
        )  # fmt: skip
        feedback = [
            Feedback(e, int(y[i]), 0.0) for e, i in zip(ids, range(start, stop), strict=True)
        ]
        out.append(DecodedBatch(block, feedback=feedback))
        start, k = stop, k + 1
    return out


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for key in a:
        if isinstance(a[key], dict):
            assert_same_state(a[key], b[key])
        elif isinstance(a[key], np.ndarray):
            np.testing.assert_array_equal(a[key], b[key], err_msg=key)
        else:
            assert a[key] == b[key], key


def test_the_cut_keeps_the_lower_layers_frozen_and_the_ledger_stores_activations_at_it() -> None:
    lower, _top = split_backbone(backbone(), 1)
    assert cut_width(lower, N_FEATURES) == 16  # the input of the last Linear layer
    p = pipeline(layers=1)
    X, y = data(90)
    before = [w.clone() for w in lower.parameters()]
    for batch in batches(X, y, [45]):
        p.process(batch)
    assert p.ledger.embedding_dim == 16
    assert p.head.n_learned == 90  # three optimizer steps of 30
    assert all(torch.equal(a, b) for a, b in zip(before, lower.parameters(), strict=True))


def test_all_layers_cut_at_the_input_and_a_module_without_layers_only_trains_whole() -> None:
    lower, _top = split_backbone(backbone(), "all")
    assert isinstance(lower, nn.Identity) and cut_width(lower, N_FEATURES) == N_FEATURES
    assert split_backbone(backbone(), 5)[0].__class__ is nn.Identity  # more than there are
    opaque = nn.Linear(N_FEATURES, 8)  # not a layer sequence (like an exported program)
    assert isinstance(split_backbone(opaque, "all")[1], nn.Linear)
    with pytest.raises(ValueError, match="cannot cut"):
        split_backbone(opaque, 1)


@pytest.mark.parametrize("optimizer", ["adam", "sgd"])
def test_updates_do_not_depend_on_how_labels_were_batched(optimizer: str) -> None:
    X, y = data(300)
    states = []
    for sizes in ([100], [7, 64, 13], [300]):
        finetune = head(small_top(), optimizer=optimizer)
        start = 0
        for k in range(len(y)):
            if start >= len(y):
                break
            stop = start + sizes[k % len(sizes)]
            finetune.learn_many(X[start:stop], y[start:stop])
            start = stop
        states.append(finetune.state_dict())
    assert states[0]["n_learned"] == 300
    for other in states[1:]:
        assert_same_state(states[0], other)


@pytest.mark.parametrize("layers", [1, "all"])
def test_a_restored_pipeline_learns_bitwise_like_an_uninterrupted_one(layers: int | str) -> None:
    X, y = data(400)
    uninterrupted = pipeline(layers)
    for batch in batches(X, y, [50]):
        uninterrupted.process(batch)

    crashed = pipeline(layers)
    for batch in batches(X[:170], y[:170], [40, 25]):
        crashed.process(batch)
    blob = encode_state(crashed.state_dict())  # arrays in an npz + JSON: no pickle
    restored = pipeline(layers)
    restored.load_state_dict(decode_state(blob))
    # the rest arrives in other batches (a restart polls differently)
    for batch in batches(X, y, [33, 77], first=170):
        restored.process(batch)
    a, b = uninterrupted.head.state_dict(), restored.head.state_dict()
    assert a["n_learned"] == 390 and a["moments"]  # Adam's moments are in the state
    assert_same_state(a, b)


def test_a_state_of_another_optimizer_or_kind_is_refused() -> None:
    adam = head(small_top(), optimizer="adam")
    sgd = head(small_top(), optimizer="sgd")
    with pytest.raises(ValueError, match="adam optimizer"):
        sgd.load_state_dict(adam.state_dict())
    with pytest.raises(ValueError, match="fine-tuning"):
        sgd.load_state_dict({"kind": "sgd"})


def test_the_source_model_stays_frozen_while_the_head_learns() -> None:
    finetune = head(small_top(), lr=0.1, step_size=10)
    X, y = data(100)
    source_before = finetune.source_proba_many(X)
    adapted_before = finetune.predict_proba_many(X)
    np.testing.assert_array_equal(source_before, adapted_before)
    finetune.learn_many(X, (y + 1) % N_CLASSES)
    np.testing.assert_array_equal(finetune.source_proba_many(X), source_before)
    assert not np.array_equal(finetune.predict_proba_many(X), adapted_before)


def test_defaults_are_the_measured_ones() -> None:
    # chosen with streamapp.bench.transfer (docs/benchmarks.md, learning quality)
    settings = FinetuneSettings()
    assert (settings.layers, settings.optimizer, settings.lr, settings.step_size) == (
        "auto", "adam", 1e-2, 50,
    )  # fmt: skip
    assert not FinetuneSettings(layers=0).enabled


def test_auto_fine_tuning_of_a_large_backbone_learns_in_the_head_only(tmp_path: Path) -> None:
    """Every optimizer step over a 1024-wide layer's weights would cost many forward passes:
    ``finetune.layers=auto`` keeps to the top layers within its weight budget, here none."""
    from streamapp.assembly import build_pipeline, finetune_layers
    from streamapp.model.bundle import load_bundle
    from streamapp.model.training import train_source_bundle
    from streamapp.scenarios import get_scenario
    from streamapp.settings import Settings

    out = tmp_path / "large"
    train_source_bundle(
        get_scenario("digits-shift"), out, hidden=(1024,), embedding_dim=64, epochs=1
    )
    bundle, settings = load_bundle(out), Settings(model={"bundle": out})
    assert finetune_layers(settings, bundle) == 0
    assert type(build_pipeline(settings, bundle).head).__name__ == "SGDHead"
    wide_top = Settings(model={"bundle": out}, finetune={"layers": 1})  # asked for: as asked
    assert type(build_pipeline(wide_top, bundle).head).__name__ == "FinetuneHead"
