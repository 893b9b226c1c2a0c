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
