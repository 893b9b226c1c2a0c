"""Model lifecycle on a running worker: promote swaps at a batch boundary with nothing lost,
a corrupt version is refused while the old one keeps serving, rollback works."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from streamapp.events import Outputs
from streamapp.kafka.topic_reader import read_to_end
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.serving.hotswap import ControlEvent
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import assert_valid, settings_env, wait_until
from tests.unit.test_registry import registry_serving_v1

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
    messages = read_to_end(settings, settings.topics.model_control, "test-control-reader")
    return [ControlEvent.decode(msg.value() or b"") for msg in messages]


def test_promote_swaps_between_batches_refuses_a_corrupt_bundle_and_rolls_back(
    make_settings: Callable[..., Settings], digits_bundle: Path, tmp_path: Path
) -> None:
    registry_serving_v1(digits_bundle, tmp_path, versions=3)
    (tmp_path / "registry" / "digits-shift" / "3" / "head.npz").write_bytes(b"bit rot")
    settings = make_settings(
        partitions=2, **{"model.registry": tmp_path / "registry", "model.name": "digits-shift"}
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
        return int(worker.event_counts().get("model_refusals", 0))  # what /metrics reads

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
    assert (
        "checksum" in (refused.reason or "") and refused.instance == settings.delivery.instance_id
    )
