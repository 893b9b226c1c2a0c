"""The faust-streaming baseline: per-event agents, as a Faust tutorial would write them.

Run by the benchmark as ``python -m faust -A streamapp.bench.faust_agent worker``; the
topics, broker and bundle come from ``BENCH_*`` environment variables. Every feature event
is decoded, scored alone and sent with ``await topic.send``; labels are read and dropped.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust
import orjson

from streamapp.bench.loops import SourceModel
from streamapp.settings import Settings

__all__ = ["app"]

_env = os.environ.get

app = faust.App(
    _env("BENCH_GROUP", "streamapp-faust-bench"),
    broker=f"kafka://{_env('BENCH_BROKER', 'localhost:9092')}",
    datadir=_env("BENCH_DATADIR", ".faust-bench"),
    store="memory://",
    web_enabled=False,
    topic_allow_declare=False,  # the benchmark created every topic
    consumer_auto_offset_reset="earliest",
    broker_session_timeout=6.0,
)
_raw = {"key_type": bytes, "value_type": bytes, "key_serializer": "raw", "value_serializer": "raw"}
features = app.topic(_env("BENCH_FEATURES", "features"), **_raw)
feedback = app.topic(_env("BENCH_FEEDBACK", "feedback"), **_raw)
predictions = app.topic(_env("BENCH_OUTPUT", "predictions"), **_raw)
model = SourceModel(Settings(model={"bundle": _env("BENCH_BUNDLE", "models/digits-shift/1")}))


@app.agent(features)
async def score(stream: AsyncIterator[tuple[bytes, bytes]]) -> None:
    async for key, value in stream.items():  # type: ignore[attr-defined]
        doc = orjson.loads(value)
        [label] = model.labels([doc["features"]])
        await predictions.send(
            key=key, value=orjson.dumps({"event_id": doc["event_id"], "label": label})
        )


@app.agent(feedback)
async def drop_labels(stream: AsyncIterator[bytes]) -> None:
    async for value in stream:
        orjson.loads(value)
