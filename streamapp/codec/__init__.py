"""Bytes <-> events with msgspec and orjson, validated against ``schemas/``.

Decoding never raises on bad input: every message becomes either part of the batch or a
:class:`~streamapp.events.DeadLetter` with its reason.

This package's face: the names the rest of the app imports, from the modules that own them.

- :mod:`~streamapp.codec.facade`: :class:`Codec`, one model's settings driving the parts below
- :mod:`~streamapp.codec.decode`: batch decode of feature events and feedback
- :mod:`~streamapp.codec.plain`: the common input shapes as typed msgspec decoders
- :mod:`~streamapp.codec.checks`: the per-message and per-field checks, with their reasons
- :mod:`~streamapp.codec.encode`: prediction and training-example records (both ways), for
  classifiers and (``Codec(task="regression")``) regression bundles
- :mod:`~streamapp.codec.dead_letters`: dead-letter records within the record byte budget
- :mod:`~streamapp.codec.wire`: the one JSON encoder every output topic is written with
"""

from __future__ import annotations

from streamapp.codec.checks import Message, MissingPolicy, Task
from streamapp.codec.dead_letters import (
    DEAD_LETTER_PAYLOAD_BYTES,
    RECORD_BUDGET_BYTES,
    dead_letter_key,
    encode_dead_letter,
    one_line,
)
from streamapp.codec.decode import DecodedBatch
from streamapp.codec.encode import UnknownLabelError
from streamapp.codec.facade import Codec
from streamapp.codec.wire import encode_json

__all__ = [
    "UnknownLabelError",
    "DEAD_LETTER_PAYLOAD_BYTES",
    "RECORD_BUDGET_BYTES",
    "Codec",
    "DecodedBatch",
    "Message",
    "MissingPolicy",
    "Task",
    "dead_letter_key",
    "encode_dead_letter",
    "encode_json",
    "one_line",
]
