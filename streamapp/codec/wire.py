"""The JSON bytes every output topic is written in: one orjson encoder, numpy included.

:func:`encode_json` writes one record; :func:`encode_records` writes many from a single call.
Both the record encoders (:mod:`streamapp.codec.encode`) and the dead letters
(:mod:`streamapp.codec.dead_letters`) write through here, so every topic's bytes agree.
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["encode_json", "encode_records"]


def encode_json(value: Any) -> bytes:
    """orjson with numpy support; the one encoder for every output topic."""
    return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY)


def encode_records(docs: list[dict[str, Any]], start: bytes) -> list[bytes]:
    """Each of ``docs`` as :func:`encode_json` writes it, from one call for all of them
    (each call has a fixed cost of about three times a prediction's own). Every doc's
    first key is the one ``start`` opens: ``},`` + ``start`` then occurs in the array only
    between two docs, since inside a JSON string every ``"`` is escaped.

    >>> encode_records([{"a": 1}, {"a": "},{"}], b'{"a":')
    [b'{"a":1}', b'{"a":"},{"}']
    """
    if len(docs) < 2:
        return [encode_json(doc) for doc in docs]
    parts = encode_json(docs)[len(start) + 1 : -2].split(b"}," + start)
    if len(parts) != len(docs):  # a doc not opening with ``start``: one call each
        return [encode_json(doc) for doc in docs]
    return [start + part + b"}" for part in parts]
