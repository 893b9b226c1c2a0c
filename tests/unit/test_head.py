from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import SGDClassifier

from streamapp.model.head import OnlineHead, RiverHead, SGDHead, make_head


@pytest.fixture
def data() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    coef = rng.normal(size=(3, 4))
    intercept = rng.normal(size=3)
    X = rng.normal(size=(200, 4))
    y = rng.integers(0, 3, 200)
    return coef, intercept, X, y


def test_transfer_init_scores_exactly_like_the_source_head(data) -> None:
    coef, intercept, X, _ = data
    head = SGDHead(coef, intercept, ["a", "b", "c"])
    expected = 1 / (1 + np.exp(-(X @ coef.T + intercept)))
    expected /= expected.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(head.predict_proba_many(X), expected, rtol=1e-12)
    assert head.n_learned == 0


def test_probabilities_match_scikit_learn_after_learning(data) -> None:
    coef, intercept, X, y = data
    head = SGDHead(coef, intercept, ["a", "b", "c"])
    head.learn_many(X, y)
    np.testing.assert_allclose(
        head.predict_proba_many(X), head.classifier.predict_proba(X), rtol=1e-10
    )


def test_learning_matches_a_plain_sgd_classifier_warm_started_the_public_way(data) -> None:
    coef, intercept, X, y = data
    head = SGDHead(coef, intercept, ["a", "b", "c"], eta0=0.01)
    head.learn_many(X[:100], y[:100])
    head.learn_many(X[100:], y[100:])
    reference = SGDClassifier(
        loss="log_loss",
        learning_rate="constant",
        eta0=0.01,
        alpha=1e-4,
        shuffle=False,
        random_state=0,
        max_iter=1,
        tol=None,
    )
    reference.fit(X, y, coef_init=coef, intercept_init=intercept)  # one epoch, same order
    np.testing.assert_allclose(head.coef, reference.coef_, rtol=1e-10)
    np.testing.assert_allclose(head.intercept, reference.intercept_, rtol=1e-10)


def test_updates_are_deterministic(data) -> None:
    coef, intercept, X, y = data
    a, b = SGDHead(coef, intercept, "abc"), SGDHead(coef, intercept, "abc")
    for head in (a, b):
        for start in range(0, 200, 17):
            head.learn_many(X[start : start + 17], y[start : start + 17])
    assert np.array_equal(a.coef, b.coef) and np.array_equal(a.intercept, b.intercept)


def test_state_round_trip_continues_identically(data) -> None:
    coef, intercept, X, y = data
    head = SGDHead(coef, intercept, "abc")
    head.learn_many(X[:100], y[:100])
    state = head.state_dict()
    assert all(isinstance(v, np.ndarray | int | float | str) for v in state.values())
    restored = SGDHead(np.zeros_like(coef), np.zeros(3), "abc")
    restored.load_state_dict(state)
    assert restored.n_learned == 100
    head.learn_many(X[100:], y[100:])
    restored.learn_many(X[100:], y[100:])
    assert np.array_equal(head.coef, restored.coef)


def test_binary_head_uses_one_logit() -> None:
    head = SGDHead(np.array([[2.0, 0.0]]), np.array([0.0]), ["no", "yes"])
    proba = head.predict_proba_many(np.array([[1.0, 0.0], [-1.0, 0.0]]))
    assert proba.shape == (2, 2)
    assert proba[0, 1] > 0.5 > proba[1, 1]
    head.learn_many(np.array([[1.0, 0.0]] * 5), np.array([0] * 5))
    assert head.n_learned == 5


def test_mismatched_weights_are_refused() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        SGDHead(np.zeros((2, 4)), np.zeros(2), ["a", "b", "c"])


def test_river_head_fits_the_same_seam(data) -> None:
    coef, intercept, X, y = data
    head = make_head("river", coef, intercept, "abc", eta0=0.05)
    assert isinstance(head, OnlineHead) and isinstance(head, RiverHead)
    before = head.predict_proba_many(X[:5])
    np.testing.assert_allclose(before.sum(axis=1), 1.0)
    sgd = SGDHead(coef, intercept, "abc")
    np.testing.assert_allclose(before, sgd.predict_proba_many(X[:5]), rtol=1e-6)
    head.learn_many(X, y)
    state = head.state_dict()
    clone = make_head("river", coef, intercept, "abc", eta0=0.05)
    clone.load_state_dict(state)
    np.testing.assert_allclose(clone.predict_proba_many(X[:5]), head.predict_proba_many(X[:5]))


def test_unknown_head_kind_is_refused(data) -> None:
    coef, intercept, _, _ = data
    with pytest.raises(ValueError, match="unknown head kind"):
        make_head("xgboost", coef, intercept, "abc")


@pytest.mark.parametrize("weight_decay", [0.0, 1e-3])
@pytest.mark.parametrize("classes", [["a", "b"], ["a", "b", "c"]])
def test_the_numpy_finetune_step_is_torch_autograd_and_adam(
    weight_decay: float, classes: list[str]
) -> None:
    """The fast CPU step (numpy on views of the torch weights and moments) takes the same
    steps as the torch module, its autograd and torch's Adam, and leaves the same state."""
    from torch import nn

    from streamapp.model.finetune import FinetuneHead

    torch.manual_seed(0)
    top = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5), nn.ReLU())
    rows = 1 if len(classes) == 2 else len(classes)
    rng = np.random.default_rng(1)
    coef, intercept = rng.normal(size=(rows, 5)), rng.normal(size=rows)
    fast, slow = (
        FinetuneHead(
            top, coef, intercept, classes, step_size=7, weight_decay=weight_decay, numpy_step=numpy
        )
        for numpy in (True, False)  # slow: module forward, autograd, optimizer.step()
    )
    assert fast.numpy_steps and not slow.numpy_steps
    X, y = rng.normal(size=(60, 6)) * 3, rng.integers(0, len(classes), 60)
    for head in (fast, slow):
        head.learn_many(X[:25], y[:25])
        head.load_state_dict(head.state_dict())  # a restore in between: fresh moment tensors
        head.learn_many(X[25:], y[25:])
    a, b = fast.state_dict(), slow.state_dict()
    assert a["n_learned"] == b["n_learned"] == 56
    assert a["last_loss"] == pytest.approx(b["last_loss"], rel=1e-12)
    for key in a["weights"]:
        np.testing.assert_allclose(a["weights"][key], b["weights"][key], rtol=1e-10, atol=1e-12)
    assert a["moments"].keys() == b["moments"].keys()
    for index, slots in a["moments"].items():
        assert slots.keys() == b["moments"][index].keys()
        for name, value in slots.items():
            np.testing.assert_allclose(value, b["moments"][index][name], rtol=1e-10, atol=1e-14)
