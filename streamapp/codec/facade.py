"""The codec users call: one model's settings, driving its batch decoder and record encoder.

:class:`Codec` holds the parameters; the work is its parts': :class:`BatchDecoder` (with the
per-message checks it inherits) decodes the input topics, :class:`RecordEncoder` writes the
output records and reads back the training examples.
"""

from __future__ import annotations

from collections.abc import Sequence

from streamapp.codec.checks import MissingPolicy, Task
from streamapp.codec.dead_letters import DEAD_LETTER_PAYLOAD_BYTES
from streamapp.codec.decode import BatchDecoder
from streamapp.codec.encode import RecordEncoder
from streamapp.schemas import validator

__all__ = ["Codec"]


class Codec(BatchDecoder, RecordEncoder):
    """Decodes input messages and encodes output records for one model's features and classes
    (or its numeric target).

    Parameters
    ----------
    feature_names
        The model's input features, in order.
    classes
        The model's classes; labels are matched by their string form. Empty for regression.
    features_topic, feedback_topic
        Which topic carries which kind of message.
    max_abs_value
        Feature values beyond this magnitude are rejected (``value_range``).
    max_abs_target
        Regression targets beyond this magnitude are rejected (``value_range``): amounts in
        cents or prices may dwarf any feature, but one absurd target must not swing the head.
    max_payload_bytes
        Larger messages are rejected before parsing (``oversized``).
    max_future_skew_s
        An event or label whose ``ts`` is further ahead of its Kafka timestamp is rejected
        (``ts_out_of_range``): one bad clock must not move stream time into the future.
    dead_letter_payload_bytes
        A dead letter keeps at most this many bytes of its payload.
    missing
        A ``null`` or absent feature: ``"dead-letter"`` (reason ``missing``) or ``"impute"``
        (the value becomes NaN, which the embedder replaces by the source mean and the drift
        monitor counts per feature).
    task
        ``"classification"``: feedback carries a class (``schemas/feedback.schema.json``),
        predictions a label and probabilities (``prediction.schema.json``).
        ``"regression"``: feedback carries the target, a JSON number
        (``regression-feedback.schema.json``), predictions a value and an interval
        (``regression-prediction.schema.json``), training examples a numeric label.
    """

    def __init__(
        self,
        feature_names: Sequence[str],
        classes: Sequence[str],
        *,
        features_topic: str = "features",
        feedback_topic: str = "feedback",
        max_abs_value: float = 1e6,
        max_abs_target: float = 1e12,
        max_payload_bytes: int = 262_144,
        max_future_skew_s: float = 300.0,
        dead_letter_payload_bytes: int = DEAD_LETTER_PAYLOAD_BYTES,
        missing: MissingPolicy = "dead-letter",
        task: Task = "classification",
    ) -> None:
        if missing not in ("dead-letter", "impute"):
            raise ValueError(f"missing must be 'dead-letter' or 'impute', not {missing!r}")
        if task not in ("classification", "regression"):
            raise ValueError(f"task must be 'classification' or 'regression', not {task!r}")
        if task == "regression" and len(classes):
            raise ValueError(f"a regression codec has no classes, not {list(classes)[:5]}")
        self.task = task
        self.missing = missing
        self.feature_names = list(feature_names)
        self.classes = [str(c) for c in classes]
        self.features_topic = features_topic
        self.feedback_topic = feedback_topic
        self.max_abs_value = max_abs_value
        self.max_abs_target = max_abs_target
        self.max_payload_bytes = max_payload_bytes
        self.max_future_skew_s = max_future_skew_s
        self.dead_letter_payload_bytes = dead_letter_payload_bytes
        self._feature_index = {name: i for i, name in enumerate(self.feature_names)}
        self._label_index = {name: i for i, name in enumerate(self.classes)}
        self._validate_feature = validator("feature-event")
        self._validate_feedback = validator(
            "regression-feedback" if task == "regression" else "feedback"
        )
