"""A regression bundle through the composition root: which head, which rows, which refusals."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from streamapp.assembly import build_embedder, build_head, build_pipeline
from streamapp.errors import ConfigError
from streamapp.model.bundle import load_bundle
from streamapp.regression.finetune import RegressionFinetuneHead
from streamapp.regression.head import LinearRegressionHead
from streamapp.regression.pipeline import RegressionPipeline
from streamapp.scenarios import get_scenario
from streamapp.serving.challenger import Shadow
from streamapp.settings import Settings


def settings(bundle: Path, **overrides: object) -> Settings:
    return Settings(model={"bundle": bundle}).with_overrides(**overrides)


def test_the_default_head_sees_embedding_and_inputs_and_starts_as_the_source_model(
    friedman_bundle: Path,
) -> None:
    bundle = load_bundle(friedman_bundle)
    m = bundle.manifest
    pipeline = build_pipeline(settings(friedman_bundle), bundle)
    assert isinstance(pipeline, RegressionPipeline)
    assert isinstance(pipeline.head, LinearRegressionHead)
    assert pipeline.ledger.embedding_dim == m.embedding_dim + m.input_dim
    # a learner builds the same rows the scorers keep (training examples carry them)
    assert build_embedder(settings(friedman_bundle, role="learner"), bundle)[1] == (
        pipeline.ledger.embedding_dim
    )
    X, _, _ = get_scenario("friedman-shift").target_data(50)
    E = pipeline.embed(X.astype(np.float32))
    served = pipeline.head.predict_many(E)
    plain = build_pipeline(settings(friedman_bundle, **{"regression.with_inputs": False}), bundle)
    source = plain.head.predict_many(plain.embed(X.astype(np.float32)))
    np.testing.assert_allclose(served, source, rtol=1e-6)  # the inputs' weights start at 0
    assert plain.ledger.embedding_dim == m.embedding_dim


def test_fine_tuning_a_regression_bundle_is_opt_in(friedman_bundle: Path) -> None:
    bundle = load_bundle(friedman_bundle)
    assert isinstance(build_head(settings(friedman_bundle), bundle), LinearRegressionHead)
    tuned = settings(friedman_bundle, **{"finetune.layers": 1})
    pipeline = build_pipeline(tuned, bundle)
    assert isinstance(pipeline.head, RegressionFinetuneHead)
    assert pipeline.ledger.embedding_dim == build_embedder(tuned, bundle)[1]
    X, y, _ = get_scenario("friedman-shift").target_data(400)
    E = pipeline.embed(X.astype(np.float32))
    before = pipeline.head.predict_many(E)
    pipeline.head.learn_many(E, y)
    assert pipeline.head.n_learned == 400
    assert not np.array_equal(pipeline.head.predict_many(E), before)


def test_a_challenger_refuses_a_regression_bundle_in_one_line(friedman_bundle: Path) -> None:
    s = settings(friedman_bundle, challenger={"enabled": True})
    with pytest.raises(ConfigError, match="compares classifiers"):
        Shadow(s, load_bundle(friedman_bundle))


@pytest.mark.parametrize(("before", "after"), [(True, False), (False, True)])
def test_a_snapshot_restores_when_with_inputs_changed_since(
    friedman_bundle: Path, before: bool, after: bool
) -> None:
    from streamapp.checkpointing.state import decode_state, encode_state
    from streamapp.codec import DecodedBatch
    from streamapp.events import FeatureBlock, Feedback, SourcePosition

    bundle = load_bundle(friedman_bundle)
    X, y, _ = get_scenario("friedman-shift").target_data(600)

    def batch(start: int, stop: int) -> DecodedBatch:
        ids = [f"e{i}" for i in range(start, stop)]
        block = FeatureBlock(
            ids,
            [None] * len(ids),
            X[start:stop].astype(np.float32),
            np.zeros(len(ids)),
            [SourcePosition("features", 0, i) for i in range(start, stop)],
        )
        labels = [
            Feedback(i, float(y[k]), 0.0) for k, i in zip(range(start, stop), ids, strict=True)
        ]
        return DecodedBatch(block, feedback=labels[: (stop - start) // 2])  # half pending

    first = build_pipeline(settings(friedman_bundle, **{"regression.with_inputs": before}), bundle)
    for start in range(0, 300, 100):
        first.process(batch(start, start + 100))
    state = decode_state(encode_state(first.state_dict()))
    later = build_pipeline(settings(friedman_bundle, **{"regression.with_inputs": after}), bundle)
    later.load_state_dict(state)
    embedding = bundle.manifest.embedding_dim
    np.testing.assert_array_equal(later.head.coef[:embedding], first.head.coef[:embedding])
    pending = [Feedback(f"e{k}", float(y[k]), 0.0) for k in range(50, 100)]  # served before
    out = later.process(DecodedBatch(FeatureBlock.empty(X.shape[1]), feedback=pending))
    assert out.joined is not None and len(out.joined) == 50
    out = later.process(batch(300, 400))
    assert out.predictions is not None and np.isfinite(out.predictions.proba).all()
    assert later.head.n_learned == first.head.n_learned + 50 + 50


def test_a_bundle_without_source_metrics_is_served(friedman_bundle: Path, tmp_path: Path) -> None:
    import shutil

    import orjson

    copy = tmp_path / "bundle"
    shutil.copytree(friedman_bundle, copy)
    manifest = orjson.loads((copy / "manifest.json").read_bytes())
    manifest["source_metrics"]["source_mae"] = None  # a bundle trained without a holdout
    (copy / "manifest.json").write_bytes(orjson.dumps(manifest))
    pipeline = build_pipeline(settings(copy), load_bundle(copy))
    assert isinstance(pipeline, RegressionPipeline) and pipeline.monitor.detectors.scale == 1.0


def test_a_hot_swap_to_a_bundle_of_the_other_task_is_refused(
    friedman_bundle: Path, digits_bundle: Path
) -> None:
    from streamapp.errors import BundleError
    from streamapp.serving.hotswap import check_same_task

    regression, classifier = load_bundle(friedman_bundle), load_bundle(digits_bundle)
    check_same_task("regression", regression)  # the same task: no refusal
    check_same_task("classification", classifier)
    with pytest.raises(BundleError, match="regression bundle cannot replace a classification"):
        check_same_task("classification", regression)
    with pytest.raises(BundleError, match="classification bundle cannot replace a regression"):
        check_same_task("regression", classifier)
