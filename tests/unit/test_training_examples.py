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
