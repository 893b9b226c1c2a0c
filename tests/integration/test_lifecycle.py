"""Model lifecycle on a running worker: promote swaps at a batch boundary with nothing lost,
a corrupt version is refused while the old one keeps serving, rollback works."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, TopicPartition

from streamapp.events import Outputs
from streamapp.hotswap import ControlEvent
from streamapp.kafka.config import consumer_config
from streamapp.model.registry import Registry
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, settings_env
from tests.unit.test_registry import bundle_version

pytestmark = pytest.mark.integration


def models_cli(settings: Settings, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "streamapp", "models", *args],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def control_events(settings: Settings) -> list[ControlEvent]:
    """Every event on the control topic so far."""
    config = {**consumer_config(settings), "group.id": "test-control-reader"}
    config.pop("group.instance.id", None)
    consumer = Consumer(config)
    topic = TopicPartition(settings.topics.model_control, 0)
    _, end = consumer.get_watermark_offsets(topic, timeout=10)
    consumer.assign([TopicPartition(topic.topic, 0, 0)])
    events: list[ControlEvent] = []
    deadline = time.monotonic() + 30
    while len(events) < end and time.monotonic() < deadline:
        for msg in consumer.consume(100, 0.5):
            if msg.error() is None:
                events.append(ControlEvent.decode(msg.value() or b""))
    consumer.close()
    return events


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def test_promote_swaps_between_batches_refuses_a_corrupt_bundle_and_rolls_back(
    make_settings: Callable[..., Settings], digits_bundle: Path, tmp_path: Path
) -> None:
    registry = Registry(tmp_path / "registry")
    registry.register(digits_bundle)
    registry.register(bundle_version(digits_bundle, tmp_path / "v2", "2"))
    registry.register(bundle_version(digits_bundle, tmp_path / "v3", "3"))
    (tmp_path / "registry" / "digits-shift" / "3" / "head.npz").write_bytes(b"bit rot")
    registry.promote("digits-shift", "1")
    settings = make_settings(
        partitions=2, registry=tmp_path / "registry", model_name="digits-shift"
    )
    seen: dict[str, str] = {}  # event_id -> the model version that scored it
    by_partition: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)

    def record(worker: Worker, outputs: Outputs) -> None:
        if outputs.predictions is None:
            return
        block = outputs.predictions
        for event_id, source in zip(block.ids, block.sources, strict=True):
            seen[event_id] = worker.bundle.version
            by_partition[(source.topic, source.partition)].append(
                (source.offset, worker.bundle.version)
            )

    worker = Worker(settings, on_batch=record)
    thread = threading.Thread(target=worker.run, kwargs={"timeout": 180})
    thread.start()

    def watcher_refusals() -> int:
        return worker._watcher.refusals if worker._watcher else 0

    steps: list[tuple[tuple[str, ...], Callable[[], bool]]] = [
        (("promote", "digits-shift", "2"), lambda: worker.bundle.version == "2"),
        (("promote", "digits-shift", "3"), lambda: watcher_refusals() == 1),  # corrupt
        (("rollback", "digits-shift"), lambda: worker.bundle.version == "2"),  # 3 -> 2
        (("rollback", "digits-shift"), lambda: worker.bundle.version == "1"),  # 2 -> 1
    ]
    total = 0
    try:
        for step, (action, done) in enumerate(steps):
            produce_records(
                settings,
                stream(
                    get_scenario("digits-shift"),
                    1200,
                    rate=1000,
                    label_delay_s=0.5,
                    id_prefix=f"s{step}-",
                    seed=step,
                ),
            )
            total += 1200
            wait_until(lambda n=total: len(seen) >= n - 400, "the worker stalled")
            models_cli(settings, *action)  # mid-stream: the step's tail is still coming
            wait_until(done, f"{action} did not take effect")
        wait_until(lambda: len(seen) >= total, "events were lost", timeout=60)
        counts = worker.event_counts()
    finally:
        worker.stop()
        thread.join()
        worker.close()

    assert len(seen) == total
    assert set(seen.values()) == {"1", "2"}  # 3 never served
    assert counts["model_swaps"] == 2 and counts["model_refusals"] == 1
    for scored in by_partition.values():
        versions = [version for _, version in sorted(scored)]
        # in offset order: 1s, then 2s, then 1s again; a partition never flips back and forth
        flips = sum(versions[i] != versions[i - 1] for i in range(1, len(versions)))
        assert flips <= 2
    events = control_events(settings)
    for event in events:
        assert_valid("model-control", orjson.loads(event.encode()))
    kinds = [(e.type, e.version) for e in events]
    for expected in [("promote", "2"), ("loaded", "2"), ("promote", "3"), ("refused", "3")]:
        assert expected in kinds
    assert ("rollback", "1") in kinds and ("loaded", "1") in kinds
    refused = next(e for e in control_events(settings) if e.type == "refused")
    assert "checksum" in (refused.reason or "") and refused.instance == settings.instance_id
