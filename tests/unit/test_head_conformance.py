"""Every head kind honours the OnlineHead contract (river's ``check_estimator`` idea):
transfer init, shapes, determinism, and a state round trip that continues identically."""

from __future__ import annotations

import numpy as np
import pytest

from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.model.head import OnlineHead, make_head

KINDS = ["sgd", "river"]


def source(n_classes: int, dim: int = 4) -> tuple[np.ndarray, np.ndarray, list[str]]:
    rng = np.random.default_rng(n_classes)
    rows = 1 if n_classes == 2 else n_classes  # a binary head is one logit row
    return rng.normal(size=(rows, dim)), rng.normal(size=rows), [f"c{i}" for i in range(n_classes)]


def data(n_classes: int, n: int = 64, dim: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)), rng.integers(0, n_classes, n)


def head(kind: str, n_classes: int) -> OnlineHead:
    coef, intercept, classes = source(n_classes)
    return make_head(kind, coef, intercept, classes, seed=3)


@pytest.fixture(
    params=[(kind, k) for kind in KINDS for k in (2, 3)], ids=lambda p: f"{p[0]}-{p[1]}"
)
def case(request: pytest.FixtureRequest) -> tuple[str, int]:
    return request.param


def test_a_fresh_head_scores_like_its_source_head(case: tuple[str, int]) -> None:
    kind, k = case
    coef, intercept, _ = source(k)
    X, _ = data(k)
    proba = head(kind, k).predict_proba_many(X)
    scores = X @ coef.T + intercept
    expected = (scores[:, 0] > 0).astype(int) if k == 2 else scores.argmax(axis=1)
    assert proba.shape == (len(X), k)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
    assert (proba.argmax(axis=1) == expected).all()  # parameter transfer


def test_learning_counts_examples_and_moves_the_weights(case: tuple[str, int]) -> None:
    kind, k = case
    h = head(kind, k)
    X, y = data(k)
    before = h.predict_proba_many(X)
    h.learn_many(X, y)
    assert h.n_learned == len(X)
    assert not np.allclose(h.predict_proba_many(X), before)


def test_learning_is_deterministic(case: tuple[str, int]) -> None:
    kind, k = case
    a, b = head(kind, k), head(kind, k)
    for seed in range(3):
        X, y = data(k, seed=seed)
        a.learn_many(X, y)
        b.learn_many(X, y)
    X, _ = data(k, seed=9)
    np.testing.assert_array_equal(a.predict_proba_many(X), b.predict_proba_many(X))


def test_the_state_round_trip_continues_exactly(case: tuple[str, int]) -> None:
    kind, k = case
    original = head(kind, k)
    original.learn_many(*data(k, seed=1))
    restored = head(kind, k)
    restored.load_state_dict(decode_state(encode_state({"head": original.state_dict()}))["head"])
    assert restored.n_learned == original.n_learned
    for seed in (2, 3):
        X, y = data(k, seed=seed)
        original.learn_many(X, y)
        restored.learn_many(X, y)
    X, _ = data(k, seed=4)
    np.testing.assert_allclose(
        restored.predict_proba_many(X), original.predict_proba_many(X), rtol=0, atol=1e-12
    )


def test_an_empty_batch_changes_nothing(case: tuple[str, int]) -> None:
    kind, k = case
    h = head(kind, k)
    X, _ = data(k)
    before = h.predict_proba_many(X)
    h.learn_many(np.empty((0, X.shape[1])), np.empty(0, np.int64))
    assert h.n_learned == 0
    np.testing.assert_array_equal(h.predict_proba_many(X), before)
