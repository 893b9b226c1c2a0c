"""Structured logs: ``key=value`` text or one JSON object per line.

Context travels in ``extra``: :func:`at` gives a record its ``topic``, ``partition`` and
``offset``, which both formats print as fields (and messages say ``topic[partition]@offset``).

>>> import io
>>> handler = logging.StreamHandler(stream := io.StringIO())
>>> handler.setFormatter(JsonFormatter())
>>> log = logging.getLogger("streamapp.example")
>>> log.addHandler(handler); log.propagate = False
>>> log.warning("dead-lettered %s", "features[0]@7", extra=at("features", 0, 7, reason="decode"))
>>> record = orjson.loads(stream.getvalue())
>>> record["message"], record["topic"], record["partition"], record["offset"], record["reason"]
('dead-lettered features[0]@7', 'features', 0, 7, 'decode')
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

__all__ = ["JsonFormatter", "KeyValueFormatter", "LogFormat", "at", "configure_logging"]

logger = logging.getLogger(__name__)

LogFormat = Literal["text", "json"]

# attributes every LogRecord has: whatever else a record carries came in through ``extra``
_STANDARD = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def at(topic: str | None, partition: int | None, offset: int | None, **more: Any) -> dict[str, Any]:
    """``extra=`` for a record about one input message."""
    return {"topic": topic, "partition": partition, "offset": offset, **more}


def _context(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD and not k.startswith("_")}


class KeyValueFormatter(logging.Formatter):
    """``2026-11-23 01:02:03,456 WARNING streamapp.worker: message topic=f partition=0 ...``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        fields = " ".join(f"{k}={_text(v)}" for k, v in _context(record).items())
        if not fields:
            return line
        head, sep, trace = line.partition("\n")  # fields stay on the message's line
        return f"{head} {fields}{sep}{trace}"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, context fields, exception."""

    def format(self, record: logging.LogRecord) -> str:
        document: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info:
            document["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(document, default=str).decode()


def _text(value: Any) -> str:
    text = str(value)
    return orjson.dumps(text).decode() if (" " in text or not text) else text


def configure_logging(level: str, fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing ``fmt`` to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
