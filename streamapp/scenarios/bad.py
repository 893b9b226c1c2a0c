"""One malformed message of each kind the worker must dead-letter (for the demo and tests)."""

from __future__ import annotations

from typing import Literal

import orjson

__all__ = ["bad_messages"]


def bad_messages(
    n_features: int, id_prefix: str = "bad"
) -> list[tuple[Literal["features", "feedback"], bytes, bytes, str]]:
    """``(topic kind, key, value, expected reason)`` for every dead-letter reason but
    ``duplicate_event`` (which needs an event that was scored before)."""
    ok = [0.5] * n_features

    def event(suffix: str, features: object, **extra: object) -> bytes:
        return orjson.dumps({"event_id": f"{id_prefix}-{suffix}", "features": features, **extra})

    return [
        ("features", b"k1", b"{not json", "decode"),
        ("features", b"k2", b"\xff\xfe\x00binary", "encoding"),
        ("features", b"k3", orjson.dumps({"id": "no-event-id", "features": ok}), "schema"),
        ("features", b"k4", event("short", ok[:-1]), "feature_count"),
        ("features", b"k5", event("names", {"nope": 1.0}), "feature_names"),
        (
            "features",
            b"k6",
            b'{"event_id": "%s-nan", "features": [%s]}'
            % (id_prefix.encode(), b", ".join([b"NaN"] + [b"0.5"] * (n_features - 1))),
            "non_finite",
        ),
        ("features", b"k7", event("huge", [1e300] * n_features), "value_range"),
        ("features", b"k8", b"x" * 300_000, "oversized"),
        (
            "feedback",
            b"k9",
            orjson.dumps({"event_id": "e0", "label": "no-such-class"}),
            "unknown_label",
        ),
        ("feedback", b"k10", orjson.dumps({"event_id": "e0"}), "schema"),
        # a clock in the year 3000 would freeze stream time
        ("features", b"k11", event("future", ok, ts=32_503_680_000.0), "ts_out_of_range"),
        ("features", b"k12", b"[" * 50_000, "decode"),  # nesting beyond any parser's depth
        (
            "feedback",
            b"k13",
            orjson.dumps({"event_id": 4242, "label": "0"}),
            "schema",
        ),  # ids: strings
    ]
