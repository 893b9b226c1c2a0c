"""The faust-streaming runtime runs the same pipeline: same inputs, same predictions, same
learned head as the default runtime (a Faust worker process on the real broker)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from streamapp.scenarios import Record, get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from streamapp.worker import Worker
from tests.conftest import WorkerProcesses, read_topic

pytestmark = pytest.mark.integration

pytest.importorskip("faust")

N, PROBES = 600, 50


def predictions(settings: Settings, expected: int) -> dict[str, dict[str, Any]]:
    docs = read_topic(settings, settings.topics.predictions, expected=expected, timeout=120)
    return {doc["event_id"]: doc for _, doc in docs}


def drive(settings: Settings, is_alive: Callable[[], bool]) -> dict[str, dict[str, Any]]:
    """Events, then all their labels, then probe events once every label was learned."""
    records = list(stream(get_scenario("digits-shift"), N + PROBES, rate=1000, label_delay_s=1))
    events = [r for r in records if r.kind == "features"]
    labels = [r for r in records if r.kind == "feedback" and int(r.key[1:]) < N]
    produce_records(settings, events[:N])
    assert len(predictions(settings, N)) == N, "the runtime did not score the events"
    produce_records(settings, labels)
    # one sync probe at a time until a prediction shows every label learned
    deadline, sync = time.monotonic() + 120, 0
    while True:
        assert is_alive() and time.monotonic() < deadline, "labels were not learned"
        template = events[N + sync % PROBES].value
        probe = {**template, "event_id": f"sync{sync}"}
        produce_records(settings, [Record("features", probe["event_id"], probe, template["ts"])])
        seen = predictions(settings, N + sync + 1)
        sync += 1
        if seen.get(probe["event_id"], {}).get("model", {}).get("head_seq") == N:
            break
    produce_records(settings, events[N:])
    return predictions(settings, N + sync + PROBES)


def test_faust_runtime_gives_the_same_predictions_and_head_as_the_default_runtime(
    make_settings: Callable[..., Settings], workers: WorkerProcesses
) -> None:
    faust_settings = make_settings(partitions=1)
    process = workers.start(faust_settings, name="faust", runtime="faust")
    try:
        by_faust = drive(faust_settings, lambda: process.poll() is None)
    finally:
        process.terminate()
        process.wait(timeout=60)

    default_settings = make_settings(partitions=1)
    worker = Worker(default_settings)
    thread = threading.Thread(target=worker.run, kwargs={"timeout": 300})
    thread.start()
    try:
        by_default = drive(default_settings, thread.is_alive)
    finally:
        worker.stop()
        thread.join()
        worker.close()

    events = [f"e{i}" for i in range(N + PROBES)]
    assert set(events) <= set(by_faust) and set(events) <= set(by_default)
    for event_id in events:
        a, b = by_faust[event_id], by_default[event_id]
        assert a["label"] == b["label"], event_id
        np.testing.assert_allclose(
            [a["probabilities"][c] for c in sorted(a["probabilities"])],
            [b["probabilities"][c] for c in sorted(b["probabilities"])],
            rtol=0,
            atol=1e-9,
        )
    # the probes were scored by heads that learned the same N labels in the same order
    assert {by_faust[f"e{i}"]["model"]["head_seq"] for i in range(N, N + PROBES)} == {N}
    assert {by_default[f"e{i}"]["model"]["head_seq"] for i in range(N, N + PROBES)} == {N}
