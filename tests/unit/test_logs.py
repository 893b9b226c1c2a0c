"""Log formats: key=value context on the text line, one JSON object per line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import orjson

from streamapp.ops.logs import JsonFormatter, KeyValueFormatter, at


def emit(formatter: logging.Formatter, **extra: object) -> str:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(formatter)
    log = logging.getLogger(f"streamapp.test.{id(stream)}")
    log.addHandler(handler)
    log.propagate = False
    try:
        raise ValueError("boom")
    except ValueError:
        log.error("failed at %s", "features[2]@41", exc_info=True, extra=extra)
    return stream.getvalue()


def test_text_lines_carry_the_context_as_key_value_pairs() -> None:
    text = emit(KeyValueFormatter(), **at("features", 2, 41, reason="schema error"))
    first, *trace = text.splitlines()
    assert first.endswith(
        'failed at features[2]@41 topic=features partition=2 offset=41 reason="schema error"'
    )
    assert "ValueError: boom" in trace[-1]


def test_json_lines_are_one_object_with_context_and_exception() -> None:
    document = orjson.loads(emit(JsonFormatter(), **at("feedback", 0, 7)))
    assert document["level"] == "ERROR"
    assert document["message"] == "failed at features[2]@41"
    assert (document["topic"], document["partition"], document["offset"]) == ("feedback", 0, 7)
    assert "ValueError: boom" in document["exception"]


def test_the_cli_switch_makes_every_line_json() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "streamapp", "--log-format", "json", "models", "verify", "/nope"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines and all(orjson.loads(line)["level"] for line in lines)
