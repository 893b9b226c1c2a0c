"""Dead-letter records: what a rejected message becomes on the dead-letter topic.

The record (:func:`encode_dead_letter`) and its key (:func:`dead_letter_key`) stay within the
producer's record byte budget (:data:`RECORD_BUDGET_BYTES`) whatever the rejected input was;
:func:`one_line` bounds the error message, which echoes input.
"""

from __future__ import annotations

import base64
import hashlib
import time
from typing import Any

from streamapp.codec.wire import encode_json
from streamapp.events import DeadLetter

__all__ = [
    "DEAD_LETTER_PAYLOAD_BYTES",
    "RECORD_BUDGET_BYTES",
    "dead_letter_key",
    "encode_dead_letter",
    "one_line",
]

# Well below the producer's default message.max.bytes (1,000,000) for value + key + headers.
RECORD_BUDGET_BYTES = 900_000
DEAD_LETTER_PAYLOAD_BYTES = 65_536  # the default of ``Settings.dead_letter_payload_bytes``
_MAX_MESSAGE_CHARS = 1_000  # an error message echoes input (a label, an id): bounded
_MAX_KEY_BYTES = 1_024  # a larger key is cut, and the record says so


def encode_dead_letter(
    dead: DeadLetter,
    now: float | None = None,
    *,
    payload_bytes: int = DEAD_LETTER_PAYLOAD_BYTES,
) -> bytes:
    """The dead-letter record for ``dead``: at most ``payload_bytes`` of the payload (text, or
    base64 when not UTF-8) with its original size and sha256, a bounded one-line message.

    Whatever the payload, the record plus its key (:func:`dead_letter_key`) stays below
    :data:`RECORD_BUDGET_BYTES`: control characters re-escape six times larger in JSON, so a
    record over budget is re-encoded with half the payload until it fits.

    >>> import orjson
    >>> from streamapp.events import Reason, SourcePosition
    >>> dead = DeadLetter(SourcePosition("f", 0, 1), None, Reason.DECODE, "bad", b"\\x01" * 10)
    >>> record = orjson.loads(encode_dead_letter(dead, now=0.0, payload_bytes=4))
    >>> record["payload"], record["payload_size"], record["payload_truncated"]
    ('\\x01\\x01\\x01\\x01', 10, True)
    """
    keep = max(0, payload_bytes)
    while True:
        value = _dead_letter_record(dead, now, keep)
        if len(value) <= RECORD_BUDGET_BYTES - _MAX_KEY_BYTES or keep == 0:
            return value
        keep //= 2


def dead_letter_key(key: bytes | None) -> bytes | None:
    """The original key when small, else its first :data:`_MAX_KEY_BYTES` bytes."""
    return key if key is None or len(key) <= _MAX_KEY_BYTES else key[:_MAX_KEY_BYTES]


def _dead_letter_record(dead: DeadLetter, now: float | None, keep: int) -> bytes:
    payload = dead.payload
    record: dict[str, Any] = {
        "source": {
            "topic": dead.source.topic,
            "partition": dead.source.partition,
            "offset": dead.source.offset,
        },
        "error": {"type": dead.reason.value, "message": one_line(dead.message)},
    }
    if payload is None:
        record |= {"payload": None, "payload_encoding": "none", "payload_size": 0}
        record |= {"payload_sha256": None, "payload_truncated": False}
    else:
        text, encoding = _payload_text(payload, keep)
        record |= {"payload": text, "payload_encoding": encoding, "payload_size": len(payload)}
        record["payload_sha256"] = hashlib.sha256(payload).hexdigest()
        record["payload_truncated"] = len(payload) > keep
    if dead.key is not None and len(dead.key) > _MAX_KEY_BYTES:
        record["key_size"] = len(dead.key)  # the record's key is cut to its first bytes
    record["ts"] = time.time() if now is None else now
    return encode_json(record)


def _payload_text(payload: bytes, keep: int) -> tuple[str, str]:
    """The first ``keep`` bytes as text when the whole payload is UTF-8, else as base64."""
    try:
        payload.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(payload[:keep]).decode("ascii"), "base64"
    # the payload is valid UTF-8, so "ignore" only drops a character cut in half at the end
    return payload[:keep].decode("utf-8", "ignore"), "utf-8"


def one_line(text: str, limit: int = _MAX_MESSAGE_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters with the original length noted.

    >>> one_line("a\\nb")
    'a b'
    >>> one_line("x" * 20, limit=5)
    'xxxxx... (20 chars)'
    """
    short = " ".join(text[: limit + 1].split())
    return short if len(text) <= limit else f"{short[:limit]}... ({len(text)} chars)"
