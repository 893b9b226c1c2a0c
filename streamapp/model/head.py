"""The online head behind one small protocol (river's vocabulary).

A head starts from the source head's weights (parameter transfer) and adapts with
``learn_many`` on the frozen backbone's embeddings. Its state is plain arrays plus JSON
scalars, so it can be checkpointed without pickle.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
from scipy.special import expit, log_expit
from sklearn.linear_model import SGDClassifier

from streamapp.model.logits import logit_rows

__all__ = ["HeadState", "OnlineHead", "RiverHead", "SGDHead", "make_head", "ovr_proba"]

logger = logging.getLogger(__name__)

HeadState = dict[str, Any]
"""Arrays (``np.ndarray``) and JSON scalars only."""


@runtime_checkable
class OnlineHead(Protocol):
    """What the pipeline needs from a head. ``y`` holds class indices."""

    classes: list[str]
    n_learned: int

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray: ...
    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None: ...
    def state_dict(self) -> HeadState: ...
    def load_state_dict(self, state: HeadState) -> None: ...


def ovr_proba(scores: np.ndarray) -> np.ndarray:
    """One-vs-rest logistic probabilities, normalized like scikit-learn's ``predict_proba``;
    bitwise scipy's ``softmax(log_expit(scores))``, even where every sigmoid underflows.

    >>> from scipy.special import log_expit, softmax
    >>> z = np.array([[2.0, -1.0, 0.5], [-800.0, -900.0, -850.0]])
    >>> bool((ovr_proba(z) == softmax(log_expit(z), axis=1)).all()), ovr_proba(z)[1].argmax()
    (True, np.int64(0))
    """
    if scores.shape[1] == 1:
        p1 = expit(scores[:, 0])
        return np.column_stack([1.0 - p1, p1])
    # normalize in log space: all sigmoids may underflow to 0 far from every class. The
    # softmax is scipy's own steps in plain numpy: scipy's array-API dispatch cost ~20 us
    # per call, three calls per batch
    logs = log_expit(scores)
    shifted = np.exp(logs - logs.max(axis=1, keepdims=True))
    return shifted / shifted.sum(axis=1, keepdims=True)


class SGDHead:
    """scikit-learn ``SGDClassifier(loss="log_loss")`` warm-started from the source head.

    Updates are deterministic (``shuffle=False``, a fixed ``random_state``): the same
    examples in the same order give bitwise the same weights.

    Parameters
    ----------
    coef, intercept
        Source head weights, ``(n_classes, dim)`` and ``(n_classes,)``; one row for 2 classes.
    classes
        Class names, in the order of the probability columns.

    Examples
    --------
    >>> import numpy as np
    >>> source_coef = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, -1.0]])
    >>> head = SGDHead(source_coef, np.zeros(3), ["a", "b", "c"], eta0=0.1)
    >>> head.predict_proba_many(np.array([[3.0, 0.0]])).argmax()
    np.int64(0)
    >>> head.learn_many(np.array([[3.0, 0.0]] * 50), np.array([1] * 50))
    >>> int(head.predict_proba_many(np.array([[3.0, 0.0]])).argmax()), head.n_learned
    (1, 50)
    """

    def __init__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        classes: Sequence[str],
        *,
        learning_rate: str = "constant",
        eta0: float = 0.003,
        alpha: float = 1e-4,
        seed: int = 0,
    ) -> None:
        self.classes = [str(c) for c in classes]
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.alpha = alpha
        self.seed = seed
        expected_rows = logit_rows(len(self.classes))
        if coef.ndim != 2 or coef.shape[0] != expected_rows or intercept.shape != (expected_rows,):
            shapes = f"{coef.shape}/{intercept.shape}"
            raise ValueError(f"head weights {shapes} do not fit {len(self.classes)} classes")
        self._reset(coef, intercept, n_learned=0, t=1.0)

    def _reset(self, coef: np.ndarray, intercept: np.ndarray, n_learned: int, t: float) -> None:
        clf = SGDClassifier(
            loss="log_loss",
            penalty="l2",
            alpha=self.alpha,
            learning_rate=self.learning_rate,
            eta0=self.eta0,
            shuffle=False,
            random_state=self.seed,
        )
        # Warm start the way partial_fit leaves an estimator after its first call.
        clf.classes_ = np.arange(len(self.classes))
        clf.coef_ = np.array(coef, dtype=np.float64, order="C")
        clf.intercept_ = np.array(intercept, dtype=np.float64)
        clf.n_features_in_ = clf.coef_.shape[1]
        clf.t_ = float(t)
        self._clf = clf
        self.n_learned = int(n_learned)

    @property
    def classifier(self) -> SGDClassifier:
        """The scikit-learn estimator the head steps (warm-started from the source head)."""
        return self._clf

    @property
    def coef(self) -> np.ndarray:
        return self._clf.coef_

    @property
    def intercept(self) -> np.ndarray:
        return self._clf.intercept_

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        """``(n, n_classes)`` probabilities; computed directly from the weights (no validation)."""
        return ovr_proba(np.asarray(X, np.float64) @ self._clf.coef_.T + self._clf.intercept_)

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        """One SGD pass over ``X`` in order."""
        if len(y) == 0:
            return
        self._clf.partial_fit(np.asarray(X, np.float64), np.asarray(y, np.int64))
        self.n_learned += len(y)

    def state_dict(self) -> HeadState:
        return {
            "kind": "sgd",
            "coef": self._clf.coef_.copy(),
            "intercept": self._clf.intercept_.copy(),
            "t": float(self._clf.t_),
            "n_learned": self.n_learned,
        }

    def load_state_dict(self, state: HeadState) -> None:
        if state.get("kind") != "sgd":
            raise ValueError(f"not an SGD head state: kind={state.get('kind')!r}")
        self._reset(state["coef"], state["intercept"], state["n_learned"], state["t"])


class RiverHead:
    """A river one-vs-rest ``LogisticRegression`` head, warm-started from the source head.

    Any river classifier fits the same seam; this one can also transfer the source weights
    and checkpoint its state as arrays. It learns one example at a time, so it is slower.

    >>> import numpy as np
    >>> head = RiverHead(np.array([[2.0], [-2.0], [0.0]]), np.zeros(3), ["a", "b", "c"], lr=0.5)
    >>> int(head.predict_proba_many(np.array([[1.0]])).argmax())
    0
    >>> head.learn_many(np.array([[1.0]] * 40), np.array([1] * 40))
    >>> int(head.predict_proba_many(np.array([[1.0]])).argmax())
    1
    """

    def __init__(
        self, coef: np.ndarray, intercept: np.ndarray, classes: Sequence[str], *, lr: float = 0.01
    ) -> None:
        self.classes = [str(c) for c in classes]
        self.lr = lr
        if len(self.classes) == 2 and coef.shape[0] == 1:  # binary source head: one logit
            coef = np.vstack([-coef, coef])
            intercept = np.concatenate([-intercept, intercept])
        self._features = [f"e{i}" for i in range(coef.shape[1])]
        self._reset(coef, intercept, n_learned=0)

    def _reset(self, coef: np.ndarray, intercept: np.ndarray, n_learned: int) -> None:
        from river import linear_model, multiclass, optim, utils

        model = multiclass.OneVsRestClassifier(
            linear_model.LogisticRegression(optimizer=optim.SGD(self.lr))
        )
        for k in range(len(self.classes)):
            binary: Any = model.classifier.clone()  # river's binary LogisticRegression
            binary._weights = utils.VectorDict(
                dict(zip(self._features, map(float, coef[k]), strict=True))
            )
            binary.intercept = float(intercept[k])
            model.classifiers[k] = binary
        self._model = model
        self.n_learned = n_learned

    def _row(self, x: np.ndarray) -> dict[str, float]:
        return dict(zip(self._features, map(float, x), strict=True))

    def predict_proba_many(self, X: np.ndarray) -> np.ndarray:
        out = np.zeros((len(X), len(self.classes)))
        for i, x in enumerate(X):
            for k, p in self._model.predict_proba_one(self._row(x)).items():
                out[i, k] = p
        return out

    def learn_many(self, X: np.ndarray, y: np.ndarray) -> None:
        for x, label in zip(X, y, strict=True):
            self._model.learn_one(self._row(x), int(label))
        self.n_learned += len(y)

    def state_dict(self) -> HeadState:
        binaries: list[Any] = [self._model.classifiers[k] for k in range(len(self.classes))]
        coef = np.array([[b._weights.get(f, 0.0) for f in self._features] for b in binaries])
        intercept = np.array([b.intercept for b in binaries])
        return {"kind": "river", "coef": coef, "intercept": intercept, "n_learned": self.n_learned}

    def load_state_dict(self, state: HeadState) -> None:
        if state.get("kind") != "river":
            raise ValueError(f"not a river head state: kind={state.get('kind')!r}")
        self._reset(state["coef"], state["intercept"], state["n_learned"])


def make_head(
    kind: str,
    coef: np.ndarray,
    intercept: np.ndarray,
    classes: Sequence[str],
    *,
    learning_rate: str = "constant",
    eta0: float = 0.003,
    alpha: float = 1e-4,
    seed: int = 0,
) -> OnlineHead:
    """The configured head, warm-started from the source head's weights."""
    if kind == "sgd":
        return SGDHead(
            coef, intercept, classes, learning_rate=learning_rate, eta0=eta0, alpha=alpha, seed=seed
        )
    if kind == "river":
        return RiverHead(coef, intercept, classes, lr=eta0)
    raise ValueError(f"unknown head kind {kind!r} (sgd, river)")
