"""Log formats: key=value context on the text line, one JSON object per line."""

from __future__ import annotations

import io
import logging
import subprocess
import sys

import orjson

from streamapp.kafka.config import admin_config, consumer_config, producer_config
from streamapp.ops.logs import JsonFormatter, KeyValueFormatter, RepeatFilter, at
from streamapp.settings import Settings
from tests.fakes import FakeClock


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


def failure(message: str, level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord("streamapp.kafka.librdkafka", level, "", 0, message, None, None)


def test_a_repeated_error_passes_once_per_interval_with_the_count_held_back() -> None:
    clock = FakeClock()
    only = RepeatFilter(interval_s=10.0, clock=clock)
    passed = []
    for tick in range(100):  # a refused connection every 200 ms for 20 s
        clock.now = tick * 0.2
        record = failure(f"Connect to 127.0.0.1:9092 failed (after {tick % 7}ms in state CONNECT)")
        if only.filter(record):
            passed.append(record)
    assert [getattr(r, "repeated", 0) for r in passed] == [0, 49]
    clock.now = 40.0  # quiet since: the next one passes
    assert only.filter(failure("Connect to 127.0.0.1:9092 failed (after 1ms in state CONNECT)"))


def test_different_errors_and_info_lines_are_not_held_back() -> None:
    only = RepeatFilter(interval_s=10.0, clock=FakeClock())
    assert only.filter(failure("Connect failed: Connection refused"))
    assert only.filter(failure("Metadata request timed out"))
    assert only.filter(failure("Connect failed: Connection refused", logging.WARNING))
    assert not only.filter(failure("Connect failed: Connection refused"))
    info = [failure("assigned features[0]", logging.INFO) for _ in range(3)]
    assert all(only.filter(record) for record in info)


def test_the_held_back_count_is_a_field_of_both_formats() -> None:
    clock = FakeClock()
    only = RepeatFilter(interval_s=1.0, clock=clock)
    records = [failure("FAIL broker down") for _ in range(4)]
    only.filter(records[0]), only.filter(records[1]), only.filter(records[2])
    clock.now = 1.5
    assert only.filter(records[3])
    assert orjson.loads(JsonFormatter().format(records[3]))["repeated"] == 2
    assert KeyValueFormatter().format(records[3]).endswith("FAIL broker down repeated=2")


def test_every_client_config_logs_through_the_rate_limited_structured_logger() -> None:
    settings = Settings(kafka={"bootstrap_servers": "127.0.0.1:9"})
    configs = [admin_config(settings), consumer_config(settings), producer_config(settings)]
    loggers = {id(config["logger"]) for config in configs}
    assert len(loggers) == 1
    log = configs[0]["logger"]
    assert log.name.startswith("streamapp.")
    assert any(isinstance(f, RepeatFilter) for f in log.filters)
