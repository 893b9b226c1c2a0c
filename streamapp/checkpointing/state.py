"""Learning-state snapshots as compact bytes: arrays in an ``.npz``, the rest as JSON.

A snapshot is a nested dict whose leaves are numpy arrays or JSON values. Arrays are stored
as ``.npz`` members (no pickle, ``allow_pickle=False`` on load) and everything else as one
JSON document, so a snapshot of a 100k-row ledger costs its float32 rows, not per-event JSON.

>>> import numpy as np
>>> blob = encode_state({"head": {"coef": np.eye(2), "n": 3}, "ids": ["a", "b"]})
>>> state = decode_state(blob)
>>> state["head"]["n"], state["ids"], state["head"]["coef"].tolist()
(3, ['a', 'b'], [[1.0, 0.0], [0.0, 1.0]])

JSON has no infinities or NaN (orjson writes them as ``null``), yet a learning state holds
them, e.g. an empty window's first event time ``+inf``; they are kept as tagged values:

>>> decode_state(encode_state({"first": float("inf"), "last": [float("-inf"), 1.5]}))
{'first': inf, 'last': [-inf, 1.5]}
"""

from __future__ import annotations

import io
import logging
import math
from typing import Any

import numpy as np
import orjson

__all__ = ["decode_state", "encode_state"]

logger = logging.getLogger(__name__)

_META = "__meta__"
_ARRAY = "__array__"
_FLOAT = "__float__"  # a non-finite float: {"__float__": "inf" | "-inf" | "nan"}


def encode_state(state: dict[str, Any]) -> bytes:
    arrays: dict[str, np.ndarray] = {}

    def strip(node: Any, path: str) -> Any:
        if isinstance(node, np.ndarray):
            arrays[path] = node
            return {_ARRAY: path}
        if isinstance(node, dict):
            return {str(k): strip(v, f"{path}/{k}") for k, v in node.items()}
        if isinstance(node, list | tuple):
            # ids are most of a ledger's JSON: strings pass as they are
            return [
                v if isinstance(v, str) else strip(v, f"{path}/{i}") for i, v in enumerate(node)
            ]
        if isinstance(node, np.generic):
            node = node.item()
        if isinstance(node, float) and not math.isfinite(node):
            return {_FLOAT: repr(node)}
        return node

    meta = strip(state, "")
    buffer = io.BytesIO()
    files: dict[str, Any] = {_META: np.frombuffer(orjson.dumps(meta), np.uint8), **arrays}
    np.savez(buffer, **files)
    return buffer.getvalue()


def decode_state(blob: bytes) -> dict[str, Any]:
    with np.load(io.BytesIO(blob), allow_pickle=False) as archive:
        arrays = {name: archive[name] for name in archive.files}
    meta = orjson.loads(arrays.pop(_META).tobytes())

    def fill(node: Any) -> Any:
        if isinstance(node, dict):
            if set(node) == {_ARRAY}:
                return arrays[node[_ARRAY]]
            if set(node) == {_FLOAT}:
                return float(node[_FLOAT])
            return {k: fill(v) for k, v in node.items()}
        if isinstance(node, list):
            return [fill(v) for v in node]
        return node

    return fill(meta)
