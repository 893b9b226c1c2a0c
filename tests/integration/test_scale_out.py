"""Scale-out on Kafka: scorer processes in one group, one learner, head snapshots on a
compacted topic (real broker, real processes)."""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamapp.assembly import build_codec, build_embedder, build_head
from streamapp.model.bundle import load_bundle
from streamapp.roles.head_updates import read_latest_head
from streamapp.scenarios import get_scenario, stream
from streamapp.scenarios.produce import produce_records
from streamapp.settings import Settings
from tests.conftest import WorkerProcesses, assert_valid, read_topic, state_arrays, wait_until

pytestmark = pytest.mark.integration

SNAPSHOTS = {"learner.publish_every_examples": 300, "learner.publish_interval_s": 0.5}
# a fine-tuned head learns in steps of 50 labels: head_seq reaches a count that is a multiple
HEAD_ONLY = {"finetune.layers": 0}


def produce(settings: Settings, n: int, prefix: str = "e", seed: int = 0) -> None:
    records = stream(
        get_scenario("digits-shift"), n, rate=1000, label_delay_s=0.5, id_prefix=prefix, seed=seed
    )
    produce_records(settings, records)


def predicted(settings: Settings, n: int) -> list[dict[str, object]]:
    """Every prediction on the topic, once ``n`` events have one (within 120 s)."""
    docs: list[dict[str, object]] = []

    def all_predicted() -> bool:
        docs[:] = [doc for _, doc in read_topic(settings, settings.topics.predictions, idle=2)]
        return len({d["event_id"] for d in docs}) >= n

    wait_until(all_predicted, lambda: f"{n} events, predictions for {len(docs)}", 120, interval=1)
    return docs


def learned_everything(settings: Settings, examples: int, timeout: float = 90) -> None:
    """Waits until the learner's newest snapshot covers ``examples`` examples."""
    head_seq: list[int | None] = [None]

    def learned() -> bool:
        snapshot = read_latest_head(settings, "digits-shift")
        head_seq[0] = snapshot and snapshot.head_seq
        return snapshot is not None and snapshot.head_seq >= examples

    wait_until(learned, lambda: f"learner at {head_seq[0]}", timeout, interval=0.5)


def single_process_head(settings: Settings, bundle_path: Path, examples: int) -> dict:
    """The head after learning every example on the topic, in offset order, here."""
    bundle = load_bundle(bundle_path)
    head, codec = build_head(settings, bundle), build_codec(settings, bundle)
    width = build_embedder(settings, bundle)[1]
    docs = [
        doc for _, doc in read_topic(settings, settings.topics.training_examples, expected=examples)
    ]
    for doc in docs[:50]:
        assert_valid("training-example", doc)
    rows = [codec.decode_training_example(orjson.dumps(doc), width) for doc in docs]
    assert len(rows) == examples
    head.learn_many(np.array([r[0] for r in rows]), np.array([r[1] for r in rows]))
    return head.state_dict()


def assert_same_weights(actual: dict, expected: dict) -> None:
    """Every array of two head states equal up to float rounding (scikit-learn rescales the
    weights at each call's end; a fine-tuned head's steps do not depend on the batching)."""
    actual_arrays, expected_arrays = state_arrays(actual), state_arrays(expected)
    assert actual_arrays.keys() == expected_arrays.keys()
    for key, value in expected_arrays.items():
        np.testing.assert_allclose(actual_arrays[key], value, rtol=1e-9, atol=1e-12, err_msg=key)


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_two_scorers_and_a_learner_share_one_head_and_predict_everything(
    make_settings: Callable[..., Settings],
    workers: WorkerProcesses,
    digits_bundle: Path,
    guarantee: str,
) -> None:
    # dynamic members: a stopping scorer leaves the group at once (noida-db never expires a
    # static member that went away; Apache Kafka does after session.timeout.ms)
    settings = make_settings(
        partitions=4,
        role="scorer",
        **{"delivery.processing_guarantee": guarantee, "kafka.static_membership": False},
        **SNAPSHOTS,
        **HEAD_ONLY,  # at-least-once redoes a tail: any number of examples
    )
    workers.start(settings.with_overrides(role="learner"), name="learner")
    workers.start(settings.with_overrides(**{"delivery.instance_id": "s1"}), name="s1")
    # one after the other, as a rollout would (noida-db can stall two first joins at once)
    workers.wait_for("s1", "assigned", timeout=90)
    s2 = workers.start(settings.with_overrides(**{"delivery.instance_id": "s2"}), name="s2")
    workers.wait_for("s2", "assigned", timeout=90)
    half = 3000
    produce(settings, half)
    predicted(settings, half)
    for name in ("s1", "s2"):  # both scorers swapped in heads from the learner
        workers.wait_for(name, "head updated to head_seq", timeout=30)
    s2.send_signal(signal.SIGTERM)  # scale in: s1 takes over s2's partitions
    assert s2.wait(timeout=60) == 0
    produce(settings, half, prefix="f", seed=1)

    docs = predicted(settings, 2 * half)
    counts = Counter(d["event_id"] for d in docs)
    expected = {f"e{i}" for i in range(half)} | {f"f{i}" for i in range(half)}
    assert set(counts) == expected  # nothing lost across the handover
    if guarantee == "exactly-once":
        assert max(counts.values()) == 1
    assert max(d["model"]["head_seq"] for d in docs) > 0  # type: ignore[index]

    # every label joined once (exactly-once); a redone tail joins again (at-least-once)
    examples = len(read_topic(settings, settings.topics.training_examples, idle=3))
    assert examples == 2 * half if guarantee == "exactly-once" else examples >= 2 * half
    learned_everything(settings, examples)
    snapshot = read_latest_head(settings, "digits-shift")
    assert snapshot is not None and snapshot.head_seq == examples
    assert_same_weights(snapshot.head, single_process_head(settings, digits_bundle, examples))


@pytest.mark.parametrize("layers", [0, "auto"], ids=["head-only", "fine-tuned"])
def test_a_killed_learner_resumes_from_its_snapshot_and_ends_with_the_same_head(
    make_settings: Callable[..., Settings],
    workers: WorkerProcesses,
    digits_bundle: Path,
    layers: int | str,
) -> None:
    settings = make_settings(
        partitions=2, role="scorer", **SNAPSHOTS, **{"finetune.layers": layers}
    )
    scorer = settings.with_overrides(**{"delivery.instance_id": "s1"})
    learner_settings = settings.with_overrides(role="learner")
    workers.start(scorer, name="s1")
    learner = workers.start(learner_settings, name="learner")
    produce(settings, 4000)
    workers.wait_for("learner", "published head_seq", timeout=90)
    learner.send_signal(signal.SIGKILL)  # mid-stream, between snapshots
    learner.wait()
    produce(settings, 2000, prefix="late", seed=1)
    workers.start(learner_settings, name="learner")
    workers.wait_for("learner", "restored head_seq", timeout=60)
    examples = 6000
    learned_everything(settings, examples)
    snapshot = read_latest_head(settings, "digits-shift")
    assert snapshot is not None and snapshot.head_seq == 6000  # nothing learned twice
    assert_same_weights(snapshot.head, single_process_head(settings, digits_bundle, examples))
