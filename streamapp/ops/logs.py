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
import re
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

import orjson

__all__ = [
    "JsonFormatter",
    "KeyValueFormatter",
    "LogFormat",
    "RepeatFilter",
    "at",
    "configure_logging",
]

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


class RepeatFilter(logging.Filter):
    """Lets the same warning or error through at most once per ``interval_s``.

    "The same" ignores numbers (ports, milliseconds, counts), so a broker that refuses
    connections every 100 ms logs once per interval. The first one let through after others
    were held back carries ``repeated``: how many were held back since the last one.

    >>> clock = iter([0.0, 1.0, 2.0, 11.0]).__next__
    >>> only = RepeatFilter(interval_s=10.0, clock=clock)
    >>> def record(message):
    ...     return logging.LogRecord("rdkafka", logging.ERROR, "", 0, message, None, None)
    >>> failures = [record(f"Connect failed (after {ms}ms)") for ms in (0, 3, 5, 7)]
    >>> [only.filter(r) for r in failures]
    [True, False, False, True]
    >>> failures[-1].repeated
    2
    """

    _MAX_KEYS = 1024  # distinct messages remembered; more are forgotten oldest first

    def __init__(
        self, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()  # librdkafka logs from each client's polling thread
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}  # key: (passed, held)

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, record.levelno, _DIGITS.sub("#", record.getMessage()))
        now = self._clock()
        with self._lock:
            passed, held = self._seen.get(key, (None, 0))
            if passed is not None and now - passed < self.interval_s:
                self._seen[key] = (passed, held + 1)
                return False
            self._seen.pop(key, None)  # re-inserted last: the dict stays in age order
            self._seen[key] = (now, 0)
            if len(self._seen) > self._MAX_KEYS:
                del self._seen[next(iter(self._seen))]
        if held:
            record.repeated = held
        return True


_DIGITS = re.compile(r"\d+")


def configure_logging(level: str, fmt: LogFormat = "text", stream: TextIO | None = None) -> None:
    """Replace the root logger's handlers with one writing ``fmt`` to ``stream`` (stderr)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else KeyValueFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
