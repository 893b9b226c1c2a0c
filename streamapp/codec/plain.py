"""The common input shapes as typed msgspec Structs: one compiled decoder per topic parses and
type-checks a message in one pass.

A message a decoder takes is valid under its schema (``schemas/feature-event.schema.json``,
``schemas/feedback.schema.json``, ``schemas/regression-feedback.schema.json``): the
Structs allow only a subset of what the schemas allow, and :func:`decode_plain` refuses
what msgspec would take but orjson (and so the per-message checks) would not. Anything
refused is left to the per-message checks (:mod:`streamapp.codec.checks`), which accept it
or say why not; a test holds the two to the same result.
"""

from __future__ import annotations

import logging
from typing import Annotated, TypeVar

import msgspec

__all__ = [
    "FEATURE_EVENTS",
    "FEEDBACK",
    "REGRESSION_FEEDBACK",
    "PlainFeatureEvent",
    "PlainFeedback",
    "PlainRegressionFeedback",
    "decode_plain",
]

logger = logging.getLogger(__name__)

S = TypeVar("S", bound=msgspec.Struct)

EventId = Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
"""1-256 characters (code points, as JSON Schema counts them); never an integer."""

Seconds = Annotated[float, msgspec.Meta(ge=0)]
"""A JSON number, zero or more: msgspec refuses bools, NaN tokens and numbers beyond float
range (orjson refuses those too)."""

ExactInt = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""A 64-bit signed integer, which orjson keeps exact (beyond 64 bits it reads a float, which
the per-message checks then match as such; msgspec bounds fit an int64 only)."""


class PlainFeatureEvent(msgspec.Struct, gc=False):
    """A feature event whose ``features`` is a list of JSON numbers, at least one (the exact
    count is the caller's to check); other members are ignored, as the schema allows them."""

    event_id: EventId
    features: Annotated[list[float], msgspec.Meta(min_length=1)]
    ts: Seconds | msgspec.UnsetType = msgspec.UNSET


class PlainFeedback(msgspec.Struct, gc=False):
    """A label that is a string or an integer; other members are ignored."""

    event_id: EventId
    label: str | ExactInt
    ts: Seconds | msgspec.UnsetType = msgspec.UNSET


class PlainRegressionFeedback(msgspec.Struct, gc=False):
    """A regression target that is a JSON number (msgspec reads an integer as its float;
    it refuses bools, strings, null and numbers beyond float range, such as ``1e999``);
    other members are ignored. Finite by construction: JSON has no NaN or infinity."""

    event_id: EventId
    label: float
    ts: Seconds | msgspec.UnsetType = msgspec.UNSET


FEATURE_EVENTS = msgspec.json.Decoder(PlainFeatureEvent)
FEEDBACK = msgspec.json.Decoder(PlainFeedback)
REGRESSION_FEEDBACK = msgspec.json.Decoder(PlainRegressionFeedback)


def decode_plain(
    decoder: msgspec.json.Decoder[S], values: list[bytes | None], max_bytes: float
) -> list[S | None]:
    """Each value as ``decoder`` types it; ``None`` where it is absent, larger than
    ``max_bytes``, not UTF-8 throughout, or not of the decoder's type.

    msgspec checks UTF-8 only in the strings it keeps; orjson (whose verdict the
    per-message checks give) refuses invalid UTF-8 anywhere, in an ignored member too."""
    decode = decoder.decode
    try:  # the usual batch: all present, small, ASCII and typed; one check for them all
        if max(map(len, values)) <= max_bytes and b"".join(values).isascii():  # type: ignore[arg-type]
            return list(map(decode, values))  # type: ignore[arg-type]
    except (TypeError, ValueError, msgspec.DecodeError, RecursionError):
        pass  # None among them, none at all, or one that does not decode: one at a time
    out: list[S | None] = []
    append = out.append
    for value in values:
        if value is None or len(value) > max_bytes:
            append(None)
            continue
        try:
            if not value.isascii():
                value.decode("utf-8")
            append(decode(value))
        except (msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            append(None)
    return out
