"""Transfer-learning accuracy, prequentially (the protocol of issue 15).

Each stream is scored in batches of 100, predict then learn, no label delay, through the
real :class:`~streamapp.pipeline.Pipeline` (ledger, join, guard). Methods: the frozen source
model, the online head (head only), fine-tuning (top layers + head), fine-tuning with the
guard (the defaults before issue 33), that with label-free input adaptation (``adapted``),
the shipped defaults: adaptation plus online model selection among the frozen, the adapted
and a from-scratch candidate (``served``), and river's from-scratch model on the same
stream: with ``progressive_val_score`` (learning after every event) and under the
pipeline's own batches (``river-batched``). ``--delay N`` delivers each label N events late.

Run: ``python -m streamapp.bench.transfer [--events 20000] [--stream digits-shift ...]``.
"""

from __future__ import annotations

import argparse
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import numpy as np
import orjson

from streamapp.assembly import build_pipeline
from streamapp.codec import DecodedBatch
from streamapp.datasets import load_table
from streamapp.events import SOURCE, FeatureBlock, Feedback
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.training import train_source_bundle, train_table_bundle
from streamapp.pipeline import Pipeline
from streamapp.scenarios import get_scenario
from streamapp.settings import (
    AdaptSettings,
    DriftSettings,
    FinetuneSettings,
    GuardSettings,
    LedgerSettings,
    ModelSettings,
    SelectionSettings,
    Settings,
)

__all__ = [
    "METHODS",
    "SklearnScenario",
    "build_transfer_pipeline",
    "main",
    "prequential",
    "quarters",
    "river_baseline",
    "river_batched",
    "summarize",
]

logger = logging.getLogger(__name__)

BATCH = 100
METHODS = ("frozen", "head", "finetuned", "guarded", "adapted", "served")
GUARDED = ("guarded", "adapted", "served")


class SklearnScenario:
    """A bundled scikit-learn dataset as a user's own data: a stratified-free random source
    split to train the source model; the rest, shuffled and repeated ``passes`` times (the
    datasets are small), is the target stream."""

    def __init__(self, name: str, source_share: float = 0.3, passes: int = 10, seed: int = 0):
        from sklearn import datasets

        loader = {"breast-cancer": datasets.load_breast_cancer, "wine": datasets.load_wine}[name]
        data = loader()
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(data.target))
        n_source = int(len(order) * source_share)
        self.name = name
        self.classes = [str(c) for c in data.target_names]
        self.feature_names = [f"f{i}" for i in range(data.data.shape[1])]
        X, y = data.data.astype(np.float32), data.target.astype(np.int64)
        self._source = X[order[:n_source]], y[order[:n_source]]
        rest = order[n_source:]
        stream = np.concatenate([rng.permutation(rest) for _ in range(passes)])
        self._target = X[stream], y[stream]

    def source_data(self) -> tuple[np.ndarray, np.ndarray]:
        return self._source

    def target_data(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        X, y = self._target
        n = min(n_events, len(y))
        return X[:n], y[:n], np.zeros(n, np.int64)


class CliDigits:
    """The user's path of issue 33 (``train-source --data`` then ``produce --from-file``): the
    digits-shift scenario written to CSV files, its source rows (the 1,797 original digits)
    30 % and its target rows 70 % of the whole (``events`` rows with ``digits-cli-long``),
    the bundle trained by :func:`~streamapp.model.training.train_table_bundle` exactly as
    ``train-source --data`` trains it (read back from the CSV, as a user's file is)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._scenario = get_scenario("digits-shift")

    def train(self, path: Path, events: int) -> None:
        X, y = self._scenario.source_data()
        source = path.parent / f"{self.name}-source.csv"
        _write_csv(source, self._scenario.feature_names, X, y)
        train_table_bundle(load_table(source, "label"), path, name="source")

    def target_data(self, n_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        n_source = len(self._scenario.source_data()[1])
        n = n_events if self.name.endswith("-long") else round(n_source * 0.7 / 0.3)
        return self._scenario.target_data(n)


def _write_csv(path: Path, names: list[str], X: np.ndarray, y: np.ndarray) -> None:
    lines = [",".join([*names, "label"])]
    rows = zip(X.tolist(), y.tolist(), strict=True)
    lines += [",".join([*map(repr, row), str(t)]) for row, t in rows]
    path.write_text("\n".join(lines) + "\n")


def _scenario(name: str) -> Any:
    if name.startswith("digits-cli"):
        return CliDigits(name)
    return SklearnScenario(name) if name in ("breast-cancer", "wine") else get_scenario(name)


def build_transfer_pipeline(
    bundle: Bundle,
    method: str,
    finetune: FinetuneSettings,
    guard: GuardSettings | None = None,
    *,
    ledger_rows: int = 1_000,
    adapt: AdaptSettings | None = None,
    selection: SelectionSettings | None = None,
) -> Pipeline:
    """A pipeline for ``method`` (see :data:`METHODS`) on ``bundle``, from the composition
    root as the worker builds it: one drift window, no expiry, a clock that stands still."""
    tuned = method not in ("frozen", "head")
    settings = Settings(
        model=ModelSettings(bundle=bundle.path),
        finetune=finetune if tuned else FinetuneSettings(layers=0),
        guard=(guard or GuardSettings()).model_copy(update={"enabled": method in GUARDED}),
        adapt=(adapt or AdaptSettings()).model_copy(
            update={"enabled": method in ("adapted", "served")}
        ),
        selection=(selection or SelectionSettings()).model_copy(
            update={"enabled": method == "served"}
        ),
        ledger=LedgerSettings(max_entries=ledger_rows, ttl_s=1e12, early_label_ttl_s=0.0),
        drift=DriftSettings(window_events=10**9),
    )
    pipeline = build_pipeline(settings, bundle)
    pipeline.learn_locally = method != "frozen"  # the frozen baseline never learns
    pipeline.clock = lambda: 0.0
    return pipeline


def prequential(
    pipeline: Pipeline, X: np.ndarray, y: np.ndarray, delay: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """``(served correct, served by the source model)`` per event: each batch of 100 is
    scored, then the labels due join: those of its own events (``delay=0``) or of the
    events ``delay`` events before."""
    correct, source = [], []
    for start in range(0, len(y), BATCH):
        rows = range(start, min(start + BATCH, len(y)))
        ids = [f"e{i}" for i in rows]
        block = FeatureBlock(ids, [None] * len(ids), X[start : rows.stop], np.zeros(len(ids)), [])
        due = range(max(0, start - delay), max(0, rows.stop - delay))
        feedback = [Feedback(f"e{r}", int(y[r]), 0.0) for r in due]
        out = pipeline.process(DecodedBatch(block, feedback=feedback))
        assert out.predictions is not None
        correct.append(out.predictions.labels == y[start : rows.stop])
        source.append(out.predictions.served_by_rows() == SOURCE)
    return np.concatenate(correct), np.concatenate(source)


def quarters(correct: np.ndarray) -> list[float]:
    return [float(q.mean()) for q in np.array_split(correct, 4)]


def summarize(correct: np.ndarray, phase: np.ndarray) -> dict[str, Any]:
    out: dict[str, Any] = {
        "all": float(correct.mean()),
        "first_1000": float(correct[:1000].mean()),
        "last_1000": float(correct[-1000:].mean()),
        "quarters": quarters(correct),
    }
    for p in np.unique(phase):
        out[f"phase_{int(p)}"] = float(correct[phase == p].mean())
    return out


def river_baseline(X: np.ndarray, y: np.ndarray, delay: int = 0) -> np.ndarray:
    """river's ``progressive_val_score`` with a from-scratch standardized logistic model."""
    from river import evaluate, linear_model, metrics, multiclass, preprocessing

    n_classes = int(y.max()) + 1
    base = linear_model.LogisticRegression()
    model = preprocessing.StandardScaler() | (
        base if n_classes == 2 else multiclass.OneVsRestClassifier(base)
    )
    correct: list[bool] = []

    class Recorder(metrics.Accuracy):
        def update(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
            correct.append(y_true == y_pred)
            super().update(y_true, y_pred, w)

    dataset = ((dict(enumerate(map(float, x))), int(t)) for x, t in zip(X, y, strict=True))
    evaluate.progressive_val_score(cast(Any, dataset), model, Recorder(), delay=delay or None)
    # river skips the metric while the model can make no prediction yet (before its first
    # label): those first events count as wrong
    missed = np.zeros(len(y) - len(correct), bool)
    return np.concatenate([missed, np.asarray(correct, bool)])


def river_batched(X: np.ndarray, y: np.ndarray, delay: int = 0) -> np.ndarray:
    """river's from-scratch standardized logistic model under the pipeline's protocol: each
    batch of :data:`BATCH` is predicted, then the labels due are learned one by one (those
    of its own events, or of the events ``delay`` events before), as :func:`prequential`
    feeds the worker. ``progressive_val_score`` (:func:`river_baseline`) learns after every
    event instead, which no micro-batching worker can.

    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(600, 2)); y = (X[:, 0] > 0).astype(np.int64)
    >>> on_time, late = river_batched(X, y), river_batched(X, y, delay=300)
    >>> float(on_time[200:].mean()) > 0.9, float(on_time.mean()) > float(late.mean())
    (True, True)
    """
    from river import linear_model, multiclass, preprocessing

    n_classes = int(y.max()) + 1
    base = linear_model.LogisticRegression()
    model = preprocessing.StandardScaler() | (
        base if n_classes == 2 else multiclass.OneVsRestClassifier(base)
    )
    rows = [dict(enumerate(map(float, x))) for x in X]
    labels = [int(t) for t in y]
    correct = np.zeros(len(y), bool)
    for start in range(0, len(y), BATCH):
        stop = min(start + BATCH, len(y))
        for i in range(start, stop):  # before its first label river predicts None: wrong
            correct[i] = model.predict_one(rows[i]) == labels[i]
        for r in range(max(0, start - delay), max(0, stop - delay)):
            model.learn_one(rows[r], labels[r])
    return correct


def run_stream(
    name: str,
    events: int,
    finetune: FinetuneSettings,
    guard: GuardSettings,
    workdir: Path,
    methods: tuple[str, ...] = METHODS,
    progress: Callable[[str], None] = logger.info,
    delay: int = 0,
) -> dict[str, Any]:
    """Every method's summary on one stream (the source model is trained once per stream)."""
    scenario = _scenario(name)
    path = workdir / name
    if not (path / "manifest.json").exists():
        if isinstance(scenario, CliDigits):
            scenario.train(path, events)
        else:
            train_source_bundle(scenario, path)
    bundle = load_bundle(path)
    X, y, phase = scenario.target_data(events)
    results: dict[str, Any] = {}
    for method in (m for m in methods if m in METHODS):
        rows = max(1_000, delay + 2 * BATCH)
        pipeline = build_transfer_pipeline(bundle, method, finetune, guard, ledger_rows=rows)
        correct, served_source = prequential(pipeline, X, y, delay)
        results[method] = summarize(correct, phase)
        if method in GUARDED:
            results[method]["served_by_source"] = float(served_source.mean())
        if pipeline.candidates is not None and pipeline.candidates.selector is not None:
            results[method]["switches"] = pipeline.candidates.switches
        progress(f"{name} {method}: {results[method]}")
    if "river" in methods:
        results["river"] = summarize(river_baseline(X, y, delay), phase)
        progress(f"{name} river: {results['river']}")
    if "river-batched" in methods:
        results["river-batched"] = summarize(river_batched(X, y, delay), phase)
        progress(f"{name} river-batched: {results['river-batched']}")
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--stream", action="append")
    parser.add_argument("--method", action="append")
    parser.add_argument("--finetune", default="{}", help="FinetuneSettings as JSON")
    parser.add_argument("--guard", default="{}", help="GuardSettings as JSON")
    parser.add_argument("--workdir", type=Path, help="keep the trained source bundles here")
    parser.add_argument("--delay", type=int, default=0, help="labels arrive N events late")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    finetune = FinetuneSettings(**orjson.loads(args.finetune))
    guard = GuardSettings(**orjson.loads(args.guard))
    methods = tuple(args.method or (*METHODS, "river", "river-batched"))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.stream or ["digits-shift", "hyperplane", "breast-cancer", "wine"]:
            workdir = args.workdir or Path(tmp)
            result = run_stream(
                name, args.events, finetune, guard, workdir, methods, delay=args.delay
            )
            line = orjson.dumps({"stream": name, "delay": args.delay, **result}).decode()
            print(line, flush=True)


if __name__ == "__main__":
    main()
