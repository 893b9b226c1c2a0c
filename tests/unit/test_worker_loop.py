"""The worker's loop, with fakes for the consumer, the publisher and delivery: one turn reads
poll -> decode -> score -> publish predictions -> learn -> publish the rest -> store ->
commit when due, and a batch's predictions leave before any of its learning work."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

from streamapp.checkpointing.state_store import Snapshot
from streamapp.events import Outputs, PredictionBlock
from streamapp.kafka.consumer import PolledBatch
from streamapp.model.bundle import load_bundle
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.fakes import FakeBatchConsumer, FakeDelivery, FakeMessage


class RecordingPublisher:
    def __init__(self, worker: Worker, log: list[Any]) -> None:
        self.worker, self.log = worker, log

    def predictions(self, predictions: PredictionBlock | None, is_live: Any = None) -> None:
        pipeline = self.worker.pipeline
        # what learning had done when they left: nothing learned, nothing remembered
        self.log.append(
            (
                "predictions",
                None if predictions is None else list(predictions.ids),
                pipeline.head.n_learned,
                len(pipeline.ledger),
                pipeline.stats.events_scored,
            )
        )

    def rest(self, outputs: Outputs, is_live: Any = None) -> None:
        self.log.append(("rest", outputs.joined is not None and len(outputs.joined)))


@pytest.fixture
def worker(digits_bundle: Path) -> Worker:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"}, model={"bundle": digits_bundle})
    return Worker(settings, load_bundle(digits_bundle))


def _batch(worker: Worker) -> PolledBatch:
    """Three events and their labels, in one batch (the labels after their events)."""
    n_features = len(worker.bundle.manifest.feature_names)
    label = worker.bundle.manifest.classes[0]
    events = [
        FakeMessage(
            "features",
            value=orjson.dumps({"event_id": f"e{i}", "features": [1.0] * n_features, "ts": 100.0}),
            offset=i,
        )
        for i in range(3)
    ]
    labels = [
        FakeMessage(
            "feedback",
            value=orjson.dumps({"event_id": f"e{i}", "label": label, "ts": 101.0}),
            offset=i,
        )
        for i in range(3)
    ]
    return PolledBatch.of([*events, *labels])


def on_fakes(worker: Worker, batch: PolledBatch, log: list[Any]) -> None:
    """The worker on a fake consumer that hands out ``batch``, and fake delivery and
    publisher that record what they are told in ``log``."""
    worker.delivery = FakeDelivery(log)  # type: ignore[assignment]
    consumer = FakeBatchConsumer(batch, assignment={("features", 0), ("feedback", 0)})
    worker.attach(consumer, RecordingPublisher(worker, log))  # type: ignore[arg-type]


def test_one_turn_publishes_the_predictions_before_the_batch_is_learned(worker: Worker) -> None:
    log: list[Any] = []
    batch = _batch(worker)
    on_fakes(worker, batch, log)
    engine = worker.engine
    score, learn = engine.score, engine.learn
    engine.score = lambda decoded: (log.append("score"), score(decoded))[1]  # type: ignore[method-assign]
    engine.learn = lambda scored: (log.append("learn"), learn(scored))[1]  # type: ignore[method-assign]

    worker.step()

    assert log == [
        "score",
        ("predictions", ["e0", "e1", "e2"], 0, 0, 0),  # before any learning work
        "learn",
        ("rest", 3),  # the three labels joined
        ("store", {("features", 0): 3, ("feedback", 0): 3}),  # the consumer's next offsets
        "commit_if_due",
    ]
    assert worker.pipeline.ledger.counts.joined == 3
    assert worker.pipeline.stats.events_scored == 3
    assert worker.messages == 6

    log.clear()
    worker.step()  # nothing polled: nothing scored or published, a commit when due
    assert log == ["commit_if_due"]


def test_the_engine_restores_what_it_snapshots_and_the_worker_serves_it(worker: Worker) -> None:
    """Delivery talks to the engine: a restore replaces the pipeline the worker serves."""
    log: list[Any] = []
    on_fakes(worker, _batch(worker), log)
    worker.step()
    engine, before = worker.engine, worker.pipeline
    blob = engine.snapshot()
    engine.restore(None)  # fresh state
    assert worker.pipeline is not before and worker.pipeline.stats.events_scored == 0
    engine.restore(Snapshot(1, blob, {("features", 0): 3}))
    assert engine.snapshot() == blob
    assert worker.pipeline.stats.events_scored == 3
    assert worker.pipeline.ledger.counts.joined == 3
