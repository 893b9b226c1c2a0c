from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.assembly import build_pipeline
from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import DecodedBatch
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.settings import DriftSettings, FinetuneSettings, Settings
from tests.conftest import state_leaves


def batches(n_batches: int, start: int = 0) -> list[DecodedBatch]:
    rng = np.random.default_rng(start)
    out = []
    for b in range(start, start + n_batches):
        ids = [f"e{b}-{i}" for i in range(40)]
        block = FeatureBlock(
            ids,
            [None] * 40,
            rng.uniform(0, 16, (40, 64)).astype(np.float32),
            np.full(40, float(b)),
            [SourcePosition("features", 0, b * 40 + i) for i in range(40)],
        )
        # labels for the previous batch's events, and one orphan
        feedback = [Feedback(f"e{b - 1}-{i}", i % 10, b + 0.5) for i in range(40)] if b else []
        out.append(DecodedBatch(block, feedback=[*feedback, Feedback("ghost", 1, b + 0.5)]))
    return out


@pytest.mark.parametrize("layers", [0, "auto"], ids=["head-only", "fine-tuned"])
def test_snapshot_restore_then_same_inputs_gives_identical_state(
    digits_bundle: Path, layers: int | str
) -> None:
    settings = Settings(
        model={"bundle": digits_bundle},
        drift=DriftSettings(window_events=100),
        finetune=FinetuneSettings(layers=layers),
    )
    bundle = load_bundle(digits_bundle)
    reference = build_pipeline(settings, bundle)
    interrupted = build_pipeline(settings, bundle)
    first, second = batches(5), batches(5, start=5)
    for batch in first:
        reference.process(batch)
        interrupted.process(batch)
    blob = encode_state(interrupted.state_dict())
    restored = build_pipeline(settings, bundle)  # a new process
    restored.load_state_dict(decode_state(blob))
    for batch in second:
        reference.process(batch)
        restored.process(batch)
    a, b = reference.state_dict(), restored.state_dict()
    head_a, head_b = state_leaves(a["head"]), state_leaves(b["head"])
    assert head_a.keys() == head_b.keys()
    for key, value in head_a.items():  # weights and optimizer state, bitwise
        assert np.array_equal(value, head_b[key]), key
    assert a["head"]["n_learned"] == b["head"]["n_learned"] > 0
    assert a["ledger"]["ids"] == b["ledger"]["ids"]
    assert np.array_equal(a["ledger"]["emb"], b["ledger"]["emb"])
    assert a["ledger"]["counts"] == b["ledger"]["counts"]
    assert a["stats"] == b["stats"]
    assert np.array_equal(a["monitor"]["_feature_counts"], b["monitor"]["_feature_counts"])
    assert a["monitor"]["performance"]["total"] == b["monitor"]["performance"]["total"]
    # weights, Adam's moments and the guard's last good copy make a fine-tuned one larger
    assert len(blob) < (200_000 if layers == 0 else 600_000)
