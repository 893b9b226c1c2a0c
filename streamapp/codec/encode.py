"""Records for the output topics: predictions, training examples and dead letters.

The training-examples topic is read here too (:meth:`RecordEncoder.decode_training_examples`):
the learner reads exactly what :meth:`RecordEncoder.encode_training_examples` writes, so the
format's two sides live in one place and change together. That reader is not the input decoder
(:mod:`streamapp.codec.decode`): the topic is the app's own output, so it needs no schema or
event-time checks, and it says why a value is refused with a ``ValueError`` (the learner
dead-letters it).
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Any, cast

import numpy as np
import orjson

from streamapp.codec.checks import NUMBER_TYPES, Task, parse_all
from streamapp.codec.dead_letters import encode_dead_letter, one_line
from streamapp.codec.wire import encode_records
from streamapp.conformal import intervals, prediction_sets
from streamapp.events import DeadLetter, JoinedExamples, PredictionBlock

__all__ = ["RecordEncoder", "UnknownLabelError"]


class UnknownLabelError(ValueError):
    """A training example's label is not one of the model's classes."""


class RecordEncoder:
    """Encodes one model's output records, and reads back its training examples.

    A part of :class:`~streamapp.codec.Codec`, which sets the attributes below from its
    parameters."""

    classes: list[str]
    task: Task = "classification"
    dead_letter_payload_bytes: int
    _label_index: dict[str, int]

    def encode_dead_letter(self, dead: DeadLetter, now: float | None = None) -> bytes:
        """The dead-letter record, keeping at most ``dead_letter_payload_bytes`` of the payload."""
        return encode_dead_letter(dead, now, payload_bytes=self.dead_letter_payload_bytes)

    def encode_predictions(
        self, block: PredictionBlock, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the predictions topic (``schemas/prediction.schema.json``;
        a regression bundle's: :meth:`encode_values`)."""
        if self.task == "regression":
            return self.encode_values(block, model_name, model_version)
        classes = self.classes
        probabilities = block.proba.astype(np.float64).tolist()
        head_seqs = block.head_seq.tolist()
        labels = [classes[i] for i in block.labels.tolist()]
        event_ts = block.event_ts.astype(np.float64).tolist()
        # which model served each row (a pipeline with a guard says; None: not remembered)
        states = block.model_states() if block.served_by is not None else [None] * len(block)
        models: dict[tuple[int, object], dict[str, object]] = {}  # rows mostly share one
        scored_ts = block.scored_ts
        sets = _prediction_sets(block, classes)
        docs = []
        for i, event_id in enumerate(block.ids):
            which = (head_seqs[i], states[i])
            model = models.get(which)
            if model is None:
                model = {"name": model_name, "version": model_version, "head_seq": which[0]}
                if which[1] is not None:
                    model["state"] = which[1]
                models[which] = model
            docs.append(
                {
                    "event_id": event_id,
                    "label": labels[i],
                    "probabilities": dict(zip(classes, probabilities[i], strict=True)),
                    "model": model,
                    "event_ts": event_ts[i],
                    "scored_ts": scored_ts,
                }
            )
            if sets is not None and sets[i] is not None:
                docs[-1]["prediction_set"] = sets[i]
        return list(zip(block.keys, encode_records(docs, b'{"event_id":'), strict=True))

    def encode_values(
        self, block: PredictionBlock, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the predictions topic from a regression bundle
        (``schemas/regression-prediction.schema.json``): column 0 of ``block.proba`` is the
        value, ``block.threshold`` the half-width of its conformal interval (NaN: unknown,
        and no ``interval``; infinite: unbounded, ``low`` and ``high`` null)."""
        values = block.proba[:, 0].astype(np.float64).tolist() if len(block) else []
        event_ts = block.event_ts.astype(np.float64).tolist()
        models = _row_models(block, model_name, model_version)
        spans = _intervals(block)
        scored_ts = block.scored_ts
        docs = []
        for i, event_id in enumerate(block.ids):
            doc: dict[str, Any] = {"event_id": event_id, "value": values[i]}
            if spans is not None and spans[i] is not None:
                doc["interval"] = spans[i]
            doc["model"] = models[i]
            doc["event_ts"] = event_ts[i]
            doc["scored_ts"] = scored_ts
            docs.append(doc)
        return list(zip(block.keys, encode_records(docs, b'{"event_id":'), strict=True))

    def encode_training_examples(
        self, joined: JoinedExamples, model_name: str, model_version: str
    ) -> list[tuple[bytes | None, bytes]]:
        """``(key, value)`` pairs for the training-examples topic: the embedding that was
        served (float64 survives JSON exactly) and the label (a class name, or a regression
        bundle's target as a JSON number), keyed by event id."""
        classes = self.classes
        embeddings = np.asarray(joined.embeddings, np.float64).tolist()
        delays = np.asarray(joined.delays, np.float64).tolist()
        labels: list[Any] = (
            np.asarray(joined.labels, np.float64).tolist()
            if self.task == "regression"
            else [classes[i] for i in joined.labels.tolist()]
        )
        model = {"name": model_name, "version": model_version}
        docs = [
            {
                "event_id": event_id,
                "label": labels[i],
                "embedding": embeddings[i],
                "model": model,
                "label_delay_s": delays[i],
            }
            for i, event_id in enumerate(joined.event_ids)
        ]
        keys = [event_id.encode() for event_id in joined.event_ids]
        return list(zip(keys, encode_records(docs, b'{"event_id":'), strict=True))

    def decode_training_examples(
        self, values: list[bytes | None], dim: int
    ) -> tuple[np.ndarray, np.ndarray, list[tuple[int, ValueError]]]:
        """``(embeddings, labels, [(position, why)])``: the examples among ``values`` in
        arrival order, and why each other value is not one; the labels are class indices, or
        a regression bundle's float64 targets. The common shape is decoded for the whole batch
        at once; anything else goes through :meth:`decode_training_example`, which says why
        it is refused."""
        dtype = np.float64 if self.task == "regression" else np.int64
        docs = parse_all(values, math.inf)
        taken: list[int] = []
        rows: list[list[Any]] = []
        labels: list[int | float] = []
        for j, doc in enumerate(docs):
            if type(doc) is not dict:
                continue
            embedding, label = doc.get("embedding"), self._plain_label(doc.get("label"))
            if label is not None and type(embedding) is list and len(embedding) == dim:
                taken.append(j)
                rows.append(embedding)
                labels.append(label)
        X = np.empty((0, dim), np.float64)
        if rows and set(map(type, itertools.chain.from_iterable(rows))) <= NUMBER_TYPES:
            with contextlib.suppress(OverflowError):  # an integer beyond float range: refused
                X = np.array(rows, np.float64)
        finite = cast(
            list[bool], np.isfinite(X).all(axis=1).tolist() if len(X) else [False] * len(taken)
        )
        taken = list(itertools.compress(taken, finite))
        X, y = (
            X[np.asarray(finite, bool)] if len(X) else X,
            list(itertools.compress(labels, finite)),
        )
        if len(taken) == len(values):  # the usual
            return X, np.array(y, dtype), []
        order, refused, done = list(taken), [], set(taken)
        more_rows, more_labels = [], []
        for j, value in enumerate(values):
            if j in done:
                continue
            try:
                embedding, label = self.decode_training_example(value, dim)
            except ValueError as exc:
                refused.append((j, exc))
                continue
            order.append(j)
            more_rows.append(embedding)
            more_labels.append(label)
        X = np.concatenate([X, np.array(more_rows, np.float64).reshape(-1, dim)])
        arrival = np.argsort(order, kind="stable")  # learning depends on the order
        return X[arrival], np.array(y + more_labels, dtype)[arrival], refused

    def _plain_label(self, label: Any) -> int | float | None:
        """A training example's label in the common shape: a known class name's index, or a
        regression bundle's finite target; None for the per-example checks."""
        if self.task != "regression":
            return self._label_index.get(label) if type(label) is str else None
        try:
            return _finite_target(label)
        except ValueError:
            return None

    def decode_training_example(
        self, value: bytes | None, dim: int
    ) -> tuple[list[float], int | float]:
        """``(embedding, class index)``, or ``(embedding, target)`` for a regression bundle;
        raises ``ValueError`` with the reason otherwise."""
        try:
            doc = orjson.loads(value or b"")
            embedding, label = doc["embedding"], doc["label"]
            known = self.task == "regression" or label in self._label_index
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"not a training example: {exc}") from None
        if not known:
            raise UnknownLabelError(f"unknown label {one_line(repr(label), 80)}")
        if not isinstance(embedding, list) or len(embedding) != dim:
            raise ValueError(f"embedding is not {dim} numbers")
        if not all(type(x) in NUMBER_TYPES and math.isfinite(x) for x in embedding):
            raise ValueError("embedding holds a non-finite or non-numeric value")
        if self.task == "regression":
            return embedding, _finite_target(label)
        return embedding, self._label_index[label]


def _finite_target(label: Any) -> float:
    """A training example's regression label as a finite float, else ``ValueError``."""
    if type(label) not in NUMBER_TYPES:
        raise ValueError(f"label {one_line(repr(label), 80)} is not a number")
    try:
        target = float(label)
    except OverflowError:
        raise ValueError("label exceeds float range") from None
    if not math.isfinite(target):
        raise ValueError(f"label {target} is not finite")
    return target


def _row_models(
    block: PredictionBlock, model_name: str, model_version: str
) -> list[dict[str, object]]:
    """Each row's ``model`` field; rows mostly share one, so each distinct one is one dict."""
    head_seqs = block.head_seq.tolist()
    states = block.model_states() if block.served_by is not None else [None] * len(block)
    models: dict[tuple[int, object], dict[str, object]] = {}
    out = []
    for which in zip(head_seqs, states, strict=True):
        model = models.get(which)
        if model is None:
            model = {"name": model_name, "version": model_version, "head_seq": which[0]}
            if which[1] is not None:
                model["state"] = which[1]
            models[which] = model
        out.append(model)
    return out


def _intervals(block: PredictionBlock) -> list[dict[str, object] | None] | None:
    """Each row's ``interval`` field of a regression block (None: the row's half-width is
    not known), or None when the block has no conformal intervals. An infinite half-width
    (too few labels yet) is an unbounded interval: ``low`` and ``high`` null, as JSON has no
    infinity; a ``-inf`` one (the calibration serves an empty interval) is written as the
    point ``value``, width 0."""
    if block.threshold is None or block.coverage is None:
        return None
    if not len(block):
        return []
    half = np.asarray(block.threshold, np.float64)
    low, high = intervals(block.proba[:, 0], np.maximum(half, 0.0))  # NaN stays NaN
    bounded = (np.isfinite(low) & np.isfinite(high)).tolist()
    known = (~np.isnan(half)).tolist()
    coverage = block.coverage
    out: list[dict[str, object] | None] = []
    for i, (lo, hi) in enumerate(zip(low.tolist(), high.tolist(), strict=True)):
        if not known[i]:
            out.append(None)
        elif bounded[i]:
            out.append({"low": lo, "high": hi, "coverage": coverage})
        else:
            out.append({"low": None, "high": None, "coverage": coverage})
    return out


def _prediction_sets(block: PredictionBlock, classes: list[str]) -> list[Any] | None:
    """Each row's ``prediction_set`` field (None: the row has no known set), or None when
    the block has no conformal sets."""
    if block.threshold is None or block.coverage is None:
        return None
    masks = prediction_sets(block.proba, block.threshold)
    # rows mostly share a few sets: one field per distinct set, looked up by its bit pattern
    patterns = np.packbits(masks, axis=1)
    keys = patterns.view(f"V{patterns.shape[1]}").ravel().tolist() if len(masks) else []
    known = (~np.isnan(block.threshold)).tolist()
    fields: dict[bytes, dict[str, object]] = {}
    out: list[Any] = []
    for i, key in enumerate(keys):
        field = fields.get(key)
        if field is None:
            members = list(itertools.compress(classes, masks[i].tolist()))
            field = fields[key] = {"classes": members, "coverage": block.coverage}
        out.append(field if known[i] else None)
    return out
