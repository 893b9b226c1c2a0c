"""Training examples (scorer -> learner): what the learner dead-letters, and why."""

from __future__ import annotations

import orjson
import pytest

from streamapp.codec import Codec, UnknownLabelError


@pytest.fixture
def codec() -> Codec:
    return Codec(["a", "b"], ["x", "y"])


def test_an_example_decodes_to_its_embedding_and_class(codec: Codec) -> None:
    value = orjson.dumps({"embedding": [0.5, 1.0, 2.0], "label": "y"})
    assert codec.decode_training_example(value, 3) == ([0.5, 1.0, 2.0], 1)


def test_an_unknown_label_is_told_apart_from_a_malformed_example(codec: Codec) -> None:
    with pytest.raises(UnknownLabelError, match="unknown label 'z'"):
        codec.decode_training_example(orjson.dumps({"embedding": [0.0], "label": "z"}), 1)
    for bad in (b"{", orjson.dumps({"embedding": [0.0, 1.0], "label": "x"})):
        with pytest.raises(ValueError, match=r"not a training example|embedding") as caught:
            codec.decode_training_example(bad, 1)
        assert not isinstance(caught.value, UnknownLabelError)


def test_joined_examples_encode_one_record_each_that_decodes_back(codec: Codec) -> None:
    import numpy as np

    from streamapp.events import JoinedExamples

    rng = np.random.default_rng(0)
    ids = ["e1", 'q"},{"event_id":"z', "e3"]
    joined = JoinedExamples(
        event_ids=ids,
        embeddings=rng.normal(size=(3, 4)),
        labels=np.array([1, 0, 1]),
        proba=np.full((3, 2), 0.5),
        delays=np.array([0.5, 1.0, 2.0]),
    )
    records = codec.encode_training_examples(joined, "m", "1")
    assert [key for key, _ in records] == [i.encode() for i in ids]
    for i, (_, value) in enumerate(records):
        doc = orjson.loads(value)
        assert (doc["event_id"], doc["label_delay_s"]) == (ids[i], joined.delays[i])
        embedding, label = codec.decode_training_example(value, 4)
        assert embedding == joined.embeddings[i].tolist() and label == joined.labels[i]


def test_a_batch_of_examples_decodes_as_each_alone_in_arrival_order(codec: Codec) -> None:
    """The learner decodes a batch at once: the same examples, in the same order, and the
    same refusals as decoding each value alone (a list as label refused, not a crash)."""
    import numpy as np

    good = [orjson.dumps({"embedding": [float(i), 1.0], "label": "xy"[i % 2]}) for i in range(6)]
    values: list[bytes | None] = [
        good[0],
        orjson.dumps({"embedding": [1, 2], "label": ["x"]}),  # unhashable label
        good[1],
        orjson.dumps({"embedding": [1.0, True], "label": "x"}),
        None,
        good[2],
        b"[not json",
        orjson.dumps({"embedding": [1.0], "label": "x"}),
        orjson.dumps({"embedding": [1.0, 2.0], "label": "z"}),
        orjson.dumps({"embedding": [1, 10**18], "label": "y"}),  # ints are numbers
        good[3],
    ]
    X, y, refused = codec.decode_training_examples(values, 2)
    alone = []
    reasons = []
    for i, value in enumerate(values):
        try:
            alone.append(codec.decode_training_example(value, 2))
        except ValueError as exc:
            reasons.append((i, type(exc), str(exc)))
    assert X.tolist() == [[float(v) for v in e] for e, _ in alone]
    assert y.tolist() == [label for _, label in alone]
    assert [(i, type(e), str(e)) for i, e in refused] == reasons
    assert len(y) == 5 and [i for i, _ in refused] == [1, 3, 4, 6, 7, 8]
    assert isinstance(refused[-1][1], UnknownLabelError)
    assert np.asarray(X).dtype == np.float64
