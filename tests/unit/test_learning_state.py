"""The whole learning state survives a snapshot in every edge state (issue 11, item 1).

``Pipeline.state_dict()`` -> ``encode_state`` -> ``decode_state`` -> a fresh pipeline's
``load_state_dict`` gives the same ``state_dict``, and the same next batches then give the
same outputs and the same state on the restored pipeline as on the uninterrupted one.
"""

from __future__ import annotations

import math
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamapp.assembly import build_pipeline
from streamapp.checkpointing.state import decode_state, encode_state
from streamapp.codec import DecodedBatch
from streamapp.drift.challenger import ChampionChallenger
from streamapp.events import FeatureBlock, Feedback, Outputs, SourcePosition
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.pipeline import Pipeline
from streamapp.settings import DriftSettings, FinetuneSettings, Settings

NOW = 5000.0  # a fixed clock: reports of both runs carry the same times


def events(first: int, n: int, ts: float | None = None) -> FeatureBlock:
    """Events ``e<first>..`` read from ``features[0]`` at offsets ``first..``: reading the same
    range again is a redelivery of the same messages."""
    ids = [f"e{k}" for k in range(first, first + n)]
    X = np.random.default_rng(first).uniform(0, 16, (n, 64)).astype(np.float32)
    when = np.full(n, float(first) if ts is None else ts)
    sources = [SourcePosition("features", 0, k) for k in range(first, first + n)]
    return FeatureBlock(ids, [i.encode() for i in ids], X, when, sources)


def joined_blocks(*blocks: FeatureBlock) -> FeatureBlock:
    return FeatureBlock.concat(blocks)


def labels(first: int, n: int, ts: float) -> list[Feedback]:
    return [
        Feedback(f"e{k}", k % 10, ts, SourcePosition("feedback", 0, 10_000 + k))
        for k in range(first, first + n)
    ]


def batch(
    block: FeatureBlock | None = None, feedback: list[Feedback] | None = None
) -> DecodedBatch:
    return DecodedBatch(block if block is not None else FeatureBlock.empty(64), feedback or [])


def next_batches() -> list[DecodedBatch]:
    """What follows the snapshot: new events, redeliveries (pending, joined, unknown), a
    duplicate at another offset, labels on time, late, duplicate, orphan and early."""
    duplicate = FeatureBlock(
        ["e100"], [b"e100"], np.zeros((1, 64), np.float32), np.full(1, 160.0),
        [SourcePosition("features", 0, 999)],
    )  # fmt: skip
    return [
        batch(events(100, 50), [*labels(0, 30, 150.0), *labels(300, 10, 150.0)]),
        batch(joined_blocks(events(100, 20), events(150, 50), duplicate), labels(100, 10, 160.0)),
        batch(events(300, 20), [*labels(100, 50, 170.0), Feedback("ghost", 3, 170.0)]),
        batch(joined_blocks(events(0, 10), events(320, 40)), labels(150, 50, 180.0)),
        batch(events(360, 40, ts=10_000.0), labels(0, 5, 10_000.0)),  # expires the rest
        batch(events(0, 5), labels(360, 40, 10_001.0)),  # redelivered after they expired
    ]


def assert_same(a: object, b: object, path: str = "state") -> None:
    """Equal trees of dicts, lists, arrays (same dtype) and scalars; NaN equals NaN."""
    if isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray), path
        assert a.dtype == b.dtype and a.shape == b.shape, (path, a.dtype, b.dtype)
        assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc"), path
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), (path, a.keys(), b)
        for key in a:
            assert_same(a[key], b[key], f"{path}.{key}")
    elif isinstance(a, list | tuple):
        assert isinstance(b, list | tuple) and len(a) == len(b), path
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same(x, y, f"{path}[{i}]")
    elif isinstance(a, float) and math.isnan(a):
        assert isinstance(b, float) and math.isnan(b), path
    else:
        assert a == b, (path, a, b)


def assert_same_outputs(a: Outputs, b: Outputs) -> None:
    assert (a.predictions is None) == (b.predictions is None)
    if a.predictions is not None and b.predictions is not None:
        for name in (
            *("ids", "keys", "proba", "labels", "event_ts", "head_seq", "sources"),
            *("threshold", "coverage"),  # the conformal sets as served
        ):
            assert_same(getattr(a.predictions, name), getattr(b.predictions, name), name)
    assert [(d.reason, d.source, d.message) for d in a.dead_letters] == [
        (d.reason, d.source, d.message) for d in b.dead_letters
    ]
    assert (a.joined is None) == (b.joined is None)
    if a.joined is not None and b.joined is not None:
        for name in ("event_ids", "embeddings", "labels", "proba", "delays", "thresholds"):
            assert_same(getattr(a.joined, name), getattr(b.joined, name), name)
    assert_same(a.drift_reports, b.drift_reports, "reports")


@pytest.fixture(scope="module", params=[0, "auto"], ids=["head-only", "fine-tuned"])
def settings(digits_bundle: Path, request: pytest.FixtureRequest) -> Settings:
    return Settings(
        model={"bundle": digits_bundle},
        drift=DriftSettings(window_events=100),
        finetune=FinetuneSettings(layers=request.param),
    )


@pytest.fixture(scope="module")
def bundles(digits_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Bundle]:
    """The digits bundle, and the same model as version 2 (for a model swap)."""
    second = tmp_path_factory.mktemp("swap") / "digits-shift" / "2"
    shutil.copytree(digits_bundle, second)
    manifest = orjson.loads((second / "manifest.json").read_bytes())
    (second / "manifest.json").write_bytes(orjson.dumps({**manifest, "version": "2"}))
    return [load_bundle(digits_bundle), load_bundle(second)]


def fresh(settings: Settings, bundle: Bundle) -> Pipeline:
    pipeline = build_pipeline(settings, bundle)
    pipeline.clock = lambda: NOW
    return pipeline


Prefix = Callable[[Settings, list[Bundle]], Pipeline]


def nothing_yet(settings: Settings, bundles: list[Bundle]) -> Pipeline:
    pipeline = fresh(settings, bundles[0])
    assert pipeline.stream_time == float("-inf")  # empty windows, empty ledger
    return pipeline


def right_after_a_report(settings: Settings, bundles: list[Bundle]) -> Pipeline:
    pipeline = fresh(settings, bundles[0])
    pipeline.process(batch(events(0, 50)))
    out = pipeline.process(batch(events(50, 50), labels(0, 40, 60.0)))
    assert len(out.drift_reports) == 1 and pipeline.monitor.events_in_window == 0
    return pipeline


def with_an_empty_ledger(settings: Settings, bundles: list[Bundle]) -> Pipeline:
    pipeline = fresh(settings, bundles[0])
    pipeline.process(batch(events(0, 60), labels(0, 60, 1.0)))
    assert len(pipeline.ledger) == 0 and pipeline.ledger.counts.joined == 60
    return pipeline


def with_parked_labels(settings: Settings, bundles: list[Bundle]) -> Pipeline:
    pipeline = fresh(settings, bundles[0])
    pipeline.process(batch(events(0, 30), [*labels(300, 15, 20.0), *labels(0, 10, 20.0)]))
    assert pipeline.ledger.parked == 15
    return pipeline


def after_a_model_swap(settings: Settings, bundles: list[Bundle]) -> Pipeline:
    """As the worker's model swap does: a new pipeline for version 2, the counters carried over."""
    before = fresh(settings, bundles[0])
    before.process(batch(events(0, 50), labels(0, 20, 50.0)))
    pipeline = fresh(settings, bundles[1])
    pipeline.stats = before.stats
    # labels of the old version's events: its ledger is gone, so they wait as parked
    pipeline.process(batch(events(50, 30), labels(20, 20, 80.0)))
    assert pipeline.model_version == "2" and pipeline.ledger.parked == 20
    return pipeline


EDGE_STATES = [
    nothing_yet,
    right_after_a_report,
    with_an_empty_ledger,
    with_parked_labels,
    after_a_model_swap,
]


@pytest.mark.parametrize("prefix", EDGE_STATES)
def test_restored_pipeline_behaves_exactly_like_the_uninterrupted_one(
    prefix: Prefix, settings: Settings, bundles: list[Bundle]
) -> None:
    uninterrupted = prefix(settings, bundles)
    snapshot = uninterrupted.state_dict()
    restored = fresh(settings, bundles[1] if prefix is after_a_model_swap else bundles[0])
    restored.load_state_dict(decode_state(encode_state(snapshot)))
    assert_same(restored.state_dict(), uninterrupted.state_dict())

    reports = 0
    for step, next_batch in enumerate(next_batches()):
        a, b = uninterrupted.process(next_batch), restored.process(next_batch)
        assert_same_outputs(a, b)
        assert_same(restored.state_dict(), uninterrupted.state_dict(), f"state after {step}")
        reports += len(a.drift_reports)
    assert reports >= 2  # the comparison covered reports, redeliveries and duplicates too
    assert uninterrupted.stats.redelivered >= 20
    assert uninterrupted.stats.dead_letters["duplicate_event"] >= 1


def test_a_snapshot_right_after_a_report_restores_the_empty_window(
    settings: Settings, bundles: list[Bundle]
) -> None:
    """The crash loop of issue 11: the monitor's +inf/-inf became null and failed to load."""
    pipeline = right_after_a_report(settings, bundles)
    state = decode_state(encode_state(pipeline.state_dict()))
    assert state["monitor"]["_first_ts"] == math.inf
    assert state["monitor"]["_last_ts"] == -math.inf
    restored = fresh(settings, bundles[0])
    restored.load_state_dict(state)
    assert restored.final_report(NOW) is None  # nothing in the window yet


def test_a_snapshot_written_with_nulls_still_loads(
    settings: Settings, bundles: list[Bundle]
) -> None:
    """Snapshots of earlier versions hold null for the non-finite floats."""
    pipeline = right_after_a_report(settings, bundles)
    state = pipeline.state_dict()
    state["monitor"].update(_first_ts=None, _last_ts=None)
    state["stream_time"] = None
    restored = fresh(settings, bundles[0])
    restored.load_state_dict(state)
    assert restored.stream_time == float("-inf")
    restored.process(batch(events(500, 10)))
    report = restored.final_report(NOW)
    assert report is not None and report["window"]["first_event_ts"] == 500.0


def test_the_challenger_comparison_round_trips() -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 200)
    champion, challenger = rng.dirichlet(np.ones(3), 200), rng.dirichlet(np.ones(3), 200)
    uninterrupted = ChampionChallenger(n_classes=3)
    uninterrupted.update(truth[:100], champion[:100], challenger[:100])
    restored = ChampionChallenger(n_classes=3)
    restored.load_state_dict(decode_state(encode_state(uninterrupted.state_dict())))
    uninterrupted.update(truth[100:], champion[100:], challenger[100:])
    restored.update(truth[100:], champion[100:], challenger[100:])
    assert_same(restored.summary(), uninterrupted.summary())
    assert restored.summary()["labels"] == 200
