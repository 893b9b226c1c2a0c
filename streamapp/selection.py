"""Online model selection: serve the candidate with the best recent prequential accuracy.

Candidates (codes of :data:`streamapp.events.MODEL_STATES`):

- ``source``: the frozen source model on the *unadapted* inputs (the reference of the guard
  too: input adaptation can never make a good model worse unnoticed);
- ``adapted``: the transfer model, its head learning online, on the adapted inputs;
- ``scratch``: a multinomial logistic regression learned from scratch on the standardized
  raw features (:class:`~streamapp.model.adapt.ScratchLinear`), on the same joined labels.

Every joined label scores every candidate as it was before learning the label (predict,
then learn). :class:`ModelSelector` keeps their outcomes on a rolling window of ``window``
labels and decides every ``check_every`` labels (counted per label, so any batching gives
the same decisions): it switches from the serving candidate to a challenger only when
McNemar's exact one-sided test says the challenger is better on the window's labels
(``p < alpha / (candidates - 1)``, Bonferroni over the challengers), at least ``min_labels``
labels in and ``hold`` labels after the last switch. Switching back needs the same evidence
the other way: that is the hysteresis.

>>> import numpy as np
>>> from streamapp.settings import SelectionSettings
>>> sel = ModelSelector(SelectionSettings(window=100, min_labels=50, check_every=10, hold=0))
>>> truth = np.zeros(100, np.int64)
>>> right, wrong = truth, np.ones(100, np.int64)
>>> sel.observe(truth, np.stack([wrong, wrong, right], axis=1))  # scratch is right, always
['scratch']
>>> sel.state, sel.switches
('scratch', 1)
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import special

from streamapp.events import ADAPTED, MODEL_STATES, SCRATCH, SOURCE, JoinedExamples
from streamapp.model.adapt import InputAdapter, ScratchLinear
from streamapp.settings import SelectionSettings

__all__ = ["CANDIDATES", "Candidates", "LedgerExtras", "ModelSelector", "p_better"]

logger = logging.getLogger(__name__)

CANDIDATES: tuple[int, ...] = (ADAPTED, SOURCE, SCRATCH)
"""Candidate codes, in the order of :meth:`ModelSelector.observe`'s columns (and of ties)."""


def p_better(b: int, c: int) -> float:
    """One-sided exact McNemar p-value that a challenger is better than the serving model
    (``b``: labels only the challenger got right, ``c``: only the serving one):
    ``P(X >= b)`` for ``X ~ Binomial(b + c, 1/2)``.

    >>> round(p_better(6, 0), 12), p_better(3, 3)
    (0.015625, 1.0)
    """
    if b <= c:
        return 1.0
    return float(special.bdtrc(b - 1, b + c, 0.5))


class ModelSelector:
    """Which candidate serves, from their outcomes on the same labels (see the module)."""

    def __init__(self, settings: SelectionSettings, candidates: int = len(CANDIDATES)) -> None:
        self.settings = settings
        self.n = candidates
        self._right = np.zeros((settings.window, candidates), bool)
        self._seen = 0  # labels since the start (ring position = seen % window)
        self._since_switch = 0
        self.serving = 0  # column index; 0 = adapted, as without selection
        self.switches = 0

    @property
    def state(self) -> str:
        return MODEL_STATES[CANDIDATES[self.serving]]

    @property
    def code(self) -> int:
        return CANDIDATES[self.serving]

    def observe(self, truth: np.ndarray, predicted: np.ndarray) -> list[str]:
        """Record outcomes (``predicted``: ``(n, candidates)`` class indices) and decide at
        every ``check_every``-th label; returns the candidates switched to."""
        right = predicted == np.asarray(truth)[:, None]
        every, w = self.settings.check_every, self.settings.window
        switched: list[str] = []
        start = 0
        while start < len(right):
            take = min(len(right) - start, every - self._seen % every)
            slots = (self._seen + np.arange(take)) % w
            self._right[slots] = right[start : start + take]
            self._seen += take
            self._since_switch += take
            start += take
            if self._seen % every == 0 and self._decide():
                switched.append(self.state)
        return switched

    def _comparisons(self) -> list[tuple[float, int, int]]:
        """Per challenger: (p-value it is better, -(b - c), column)."""
        n = min(self._seen, self.settings.window)
        window = self._right[:n]
        serving = window[:, self.serving]
        out = []
        for k in range(self.n):
            if k != self.serving:
                b = int((window[:, k] & ~serving).sum())
                c = int((~window[:, k] & serving).sum())
                out.append((p_better(b, c), c - b, k))
        return out

    def _decide(self) -> bool:
        s = self.settings
        if min(self._seen, s.window) < s.min_labels or self._since_switch < s.hold:
            return False
        p, _, best = min(self._comparisons())
        if p >= s.alpha / max(1, self.n - 1):
            return False
        logger.info("selection: %s -> %s (p=%.2g)", self.state, MODEL_STATES[CANDIDATES[best]], p)
        self.serving = best
        self.switches += 1
        self._since_switch = 0
        return True

    def summary(self) -> dict[str, Any]:
        n = min(self._seen, self.settings.window)
        acc = self._right[:n].mean(axis=0) if n else None
        return {
            "state": self.state,
            "switches": self.switches,
            "window_labels": n,
            "accuracy": {
                MODEL_STATES[CANDIDATES[k]]: (None if acc is None else float(acc[k]))
                for k in range(self.n)
            },
        }

    def state_dict(self) -> dict[str, Any]:
        return {
            "right": self._right.copy(),
            "seen": self._seen,
            "since_switch": self._since_switch,
            "serving": self.serving,
            "switches": self.switches,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._right = np.array(state["right"], bool).reshape(self.settings.window, self.n)
        self._seen = int(state["seen"])
        self._since_switch = int(state["since_switch"])
        self.serving = int(state["serving"])
        self.switches = int(state["switches"])


@dataclass(slots=True)
class LedgerExtras:
    """What a joined row carries besides its served embedding: the frozen source model's
    class on the unadapted inputs (-1: unknown, a row served before these columns) and the
    standardized raw features (the scratch candidate's inputs; NaN: unknown)."""

    source: np.ndarray
    z: np.ndarray


Embed = Callable[[np.ndarray], np.ndarray]
Proba = Callable[[np.ndarray], np.ndarray]


class Candidates:
    """Input adaptation, the scratch candidate and the selector, for the pipeline.

    The ledger keeps ``embedding | source class | z`` per served row: the pipeline adds
    :attr:`extra_width` columns to its width, and :meth:`split` takes them off the joined rows
    before anything else sees them (the learner role gets plain embeddings).
    """

    def __init__(
        self,
        adapter: InputAdapter,
        n_classes: int,
        selection: SelectionSettings | None,
    ) -> None:
        self.adapter = adapter
        scratch = selection is not None and selection.scratch
        self.scratch = (
            ScratchLinear(
                adapter.width,
                n_classes,
                learning_rate=selection.learning_rate,
                step=selection.step,
            )
            if selection is not None and scratch
            else None
        )
        self.selector = (
            ModelSelector(selection, 3 if scratch else 2) if selection is not None else None
        )
        self.extra_width = 1 + (adapter.width if self.scratch is not None else 0)

    def score(
        self,
        X: np.ndarray,
        embed: Embed,
        adapted_proba: Proba,
        source_proba: Proba,
        guard_serving_source: bool,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(proba, served_by, ledger rows)`` of a block of new events, in their order."""
        z = self.adapter.standardize(X)
        unadapted = embed(X)
        adapted = embed(self.adapter.to_inputs(z)) if self.adapter.enabled else unadapted
        p_source = source_proba(unadapted)
        code = (
            self.selector.code
            if self.selector is not None
            else (SOURCE if guard_serving_source else ADAPTED)
        )
        if code == SOURCE:
            proba = p_source
        elif code == SCRATCH and self.scratch is not None:
            proba = self.scratch.predict_proba_many(z)
        else:
            proba = adapted_proba(adapted)
        columns = [np.asarray(adapted, np.float32), p_source.argmax(axis=1)[:, None]]
        if self.scratch is not None:
            columns.append(z)
        rows = np.hstack(columns).astype(np.float32)
        return proba, np.full(len(X), code, np.int8), rows

    def split(self, joined: JoinedExamples) -> tuple[JoinedExamples, LedgerExtras]:
        """The joined rows with their served embeddings only, and the extra columns."""
        width = joined.embeddings.shape[1] - self.extra_width
        extra = joined.embeddings[:, width:]
        source = np.nan_to_num(extra[:, 0], nan=-1.0).astype(np.int64)
        z = np.asarray(extra[:, 1:], np.float64)
        joined.embeddings = joined.embeddings[:, :width]
        return joined, LedgerExtras(source, z)

    def observe(
        self, labels: np.ndarray, adapted: np.ndarray, source: np.ndarray, extras: LedgerExtras
    ) -> None:
        """Score the candidates on the joined labels (before learning them), decide, learn
        the scratch candidate."""
        known = ~np.isnan(extras.z).any(axis=1) if self.scratch is not None else None
        if self.selector is not None:
            columns = [adapted, source]
            if self.scratch is not None:
                columns.append(self.scratch.predict_proba_many(extras.z).argmax(axis=1))
            predicted = np.stack(columns, axis=1)
            if known is not None and not known.all():  # rows served before the scratch
                predicted, labels_seen = predicted[known], labels[known]
            else:
                labels_seen = labels
            self.selector.observe(labels_seen, predicted)
        if self.scratch is not None and known is not None:
            self.scratch.learn_many(extras.z[known], labels[known])

    def summary(self) -> dict[str, Any]:
        return {
            "adapt": self.adapter.summary(),
            **({"selection": self.selector.summary()} if self.selector is not None else {}),
        }

    @property
    def switches(self) -> int:
        return 0 if self.selector is None else self.selector.switches

    def state_dict(self) -> dict[str, Any]:
        return {
            "adapter": self.adapter.state_dict(),
            **({"scratch": self.scratch.state_dict()} if self.scratch is not None else {}),
            **({"selector": self.selector.state_dict()} if self.selector is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a part it lacks (other settings then) stays fresh."""
        if "adapter" in state:
            self.adapter.load_state_dict(state["adapter"])
        if self.scratch is not None and "scratch" in state:
            self.scratch.load_state_dict(state["scratch"])
        if self.selector is not None and "selector" in state:
            saved = state["selector"]
            if np.asarray(saved["right"]).size == self.selector.settings.window * self.selector.n:
                self.selector.load_state_dict(saved)
