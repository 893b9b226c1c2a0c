from __future__ import annotations

import pydantic
import pytest

from streamapp.errors import ConfigError
from streamapp.kafka.config import consumer_config, producer_config
from streamapp.settings import Settings


def test_environment_with_nested_fields_and_librdkafka_passthrough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMAPP_BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("STREAMAPP_BATCH__MAX_SIZE", "64")
    monkeypatch.setenv("STREAMAPP_TOPICS__PREDICTIONS", "scores")
    monkeypatch.setenv(
        "STREAMAPP_KAFKA", '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}'
    )
    settings = Settings()
    assert settings.batch.max_size == 64
    assert settings.topics.predictions == "scores"
    consumer = consumer_config(settings)
    assert consumer["security.protocol"] == "SASL_SSL"
    assert consumer["enable.auto.commit"] is False
    assert consumer["enable.auto.offset.store"] is False
    assert producer_config(settings)["sasl.mechanism"] == "PLAIN"


def test_cli_style_overrides_win_and_settings_stay_frozen() -> None:
    settings = Settings().with_overrides(
        **{"batch.max_wait_ms": 7, "device": "cuda", "group_id": None}
    )
    assert settings.batch.max_wait_ms == 7 and settings.device == "cuda"
    assert settings.group_id == "streamapp"
    with pytest.raises(pydantic.ValidationError):
        settings.group_id = "other"  # type: ignore[misc]


def test_invalid_values_are_refused_with_a_clear_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_size"):
        Settings().with_overrides(**{"batch.max_size": 0})
    with pytest.raises(pydantic.ValidationError, match="device"):
        Settings(device="tpu")  # type: ignore[arg-type]


def test_clients_need_bootstrap_servers() -> None:
    with pytest.raises(ConfigError, match="bootstrap"):
        consumer_config(Settings())
