from __future__ import annotations

import pydantic
import pytest

from streamapp.errors import ConfigError
from streamapp.kafka.config import consumer_config, producer_config
from streamapp.settings import KafkaSettings, Settings


def test_environment_with_nested_fields_and_librdkafka_passthrough(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("STREAMAPP_KAFKA__BOOTSTRAP_SERVERS", "broker:9092")
    monkeypatch.setenv("STREAMAPP_BATCH__MAX_SIZE", "64")
    monkeypatch.setenv("STREAMAPP_TOPICS__PREDICTIONS", "scores")
    monkeypatch.setenv(
        "STREAMAPP_KAFKA__PROPERTIES",
        '{"security.protocol": "SASL_SSL", "sasl.mechanism": "PLAIN"}',
    )
    settings = Settings()
    assert settings.kafka.bootstrap_servers == "broker:9092"
    assert settings.batch.max_size == 64
    assert settings.topics.predictions == "scores"
    consumer = consumer_config(settings)
    assert consumer["security.protocol"] == "SASL_SSL"
    assert consumer["enable.auto.commit"] is False
    assert consumer["enable.auto.offset.store"] is False
    assert producer_config(settings)["sasl.mechanism"] == "PLAIN"


def test_cli_style_overrides_win_and_settings_stay_frozen() -> None:
    settings = Settings().with_overrides(
        **{"batch.max_wait_ms": 7, "model.device": "cuda", "kafka.group_id": None}
    )
    assert settings.batch.max_wait_ms == 7 and settings.model.device == "cuda"
    assert settings.kafka.group_id == "streamapp"
    with pytest.raises(pydantic.ValidationError):
        settings.role = "learner"  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        settings.kafka.group_id = "other"  # type: ignore[misc]


def test_invalid_values_are_refused_with_a_clear_error() -> None:
    with pytest.raises(pydantic.ValidationError, match="max_size"):
        Settings().with_overrides(**{"batch.max_size": 0})
    with pytest.raises(pydantic.ValidationError, match="device"):
        Settings(model={"device": "tpu"})
    with pytest.raises(pydantic.ValidationError, match="max_abs_value"):
        Settings(input={"max_abs_value": 1e300})  # beyond float32: would become infinite


def test_clients_need_bootstrap_servers() -> None:
    with pytest.raises(ConfigError, match="bootstrap"):
        consumer_config(Settings())


def test_timing_limits_are_validated_against_the_kafka_timeouts() -> None:
    from streamapp.kafka.config import validate_timing

    ok = Settings(
        kafka={"bootstrap_servers": "b:9092"},
        delivery={"processing_guarantee": "exactly-once"},
    )
    validate_timing(ok)
    slow_commits = ok.with_overrides(**{"delivery.commit_interval_ms": 40_000})
    with pytest.raises(ConfigError, match=r"transaction\.timeout\.ms"):
        validate_timing(slow_commits)
    with pytest.raises(ConfigError, match=r"max\.poll\.interval\.ms"):
        validate_timing(
            ok.with_overrides(
                **{"kafka.max_poll_interval_ms": 10_000, "delivery.commit_interval_ms": 6_000}
            )
        )
    # the passthrough is what the clients get, so it is what is checked
    with pytest.raises(ConfigError, match=r"transaction\.timeout\.ms"):
        validate_timing(
            ok.with_overrides(**{"kafka.properties": {"transaction.timeout.ms": "1500"}})
        )


def test_exactly_once_uses_a_stable_transactional_id_and_static_membership() -> None:
    from streamapp.kafka.config import transactional_producer_config

    settings = Settings(
        kafka={"bootstrap_servers": "b:9092"},
        delivery={"processing_guarantee": "exactly-once", "instance_id": "w7"},
    )
    assert transactional_producer_config(settings)["transactional.id"] == "streamapp.w7"
    assert consumer_config(settings)["group.instance.id"] == "w7"
    assert "group.instance.id" not in consumer_config(
        settings.with_overrides(**{"kafka.static_membership": False})
    )
    assert "group.instance.id" not in consumer_config(
        Settings(kafka={"bootstrap_servers": "b:9092"})
    )


def test_passthrough_reaches_only_the_clients_that_understand_it() -> None:
    settings = Settings(
        bootstrap_servers="b:9092",
        kafka={"session.timeout.ms": "6000", "linger.ms": "20", "security.protocol": "SSL"},
    )
    consumer, producer = consumer_config(settings), producer_config(settings)
    assert consumer["session.timeout.ms"] == "6000" and "linger.ms" not in consumer
    assert producer["linger.ms"] == "20" and "session.timeout.ms" not in producer
    assert consumer["security.protocol"] == producer["security.protocol"] == "SSL"


def test_client_secrets_never_appear_in_the_settings_repr() -> None:
    settings = Settings(
        bootstrap_servers="b:9093", kafka={"sasl.password": "s3cret-pw", "ssl.key.password": "k"}
    )
    assert "s3cret-pw" not in repr(settings) and "s3cret-pw" not in str(settings)


def test_old_names_still_work_in_the_environment_with_a_warning(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("STREAMAPP_BOOTSTRAP_SERVERS", "old:9092")
    monkeypatch.setenv("STREAMAPP_PROCESSING_GUARANTEE", "exactly-once")
    monkeypatch.setenv("STREAMAPP_MODEL_NAME", "digits")
    monkeypatch.setenv("STREAMAPP_LEARNER__SNAPSHOT_EVERY_EXAMPLES", "7")
    # the old STREAMAPP_KAFKA held librdkafka properties themselves
    monkeypatch.setenv("STREAMAPP_KAFKA", '{"security.protocol": "SSL", "acks": 1}')
    with caplog.at_level("WARNING", logger="streamapp.settings"):
        settings = Settings()
    assert settings.kafka.bootstrap_servers == "old:9092"
    assert settings.exactly_once and settings.model.name == "digits"
    assert settings.learner.publish_every_examples == 7
    assert settings.kafka.properties == {"security.protocol": "SSL", "acks": "1"}
    assert "'bootstrap_servers' is now 'kafka.bootstrap_servers'" in caplog.text
    # a variable under the new name wins over the old one
    monkeypatch.setenv("STREAMAPP_KAFKA__BOOTSTRAP_SERVERS", "new:9092")
    assert Settings().kafka.bootstrap_servers == "new:9092"


def test_old_names_still_work_as_arguments_and_overrides() -> None:
    settings = Settings(bootstrap_servers="b:1", commit_interval_ms=5, missing="impute")
    assert settings.kafka.bootstrap_servers == "b:1"
    assert (settings.delivery.commit_interval_ms, settings.input.missing) == (5, "impute")
    moved = settings.with_overrides(
        **{"bundle": "models/x/1", "model_alias": "staging", "learner.snapshot_interval_s": 3}
    )
    assert (str(moved.model.bundle), moved.model.alias) == ("models/x/1", "staging")
    assert moved.learner.publish_interval_s == 3.0
    assert moved.kafka.bootstrap_servers == "b:1"  # what was not overridden stays
    # an old name beside its new group, given as a model: both kept; the caller's dicts too
    learner = {"snapshot_interval_s": 3}
    mixed = Settings(bootstrap_servers="x:1", kafka=KafkaSettings(group_id="g"), learner=learner)
    assert (mixed.kafka.bootstrap_servers, mixed.kafka.group_id) == ("x:1", "g")
    assert mixed.learner.publish_interval_s == 3.0 and learner == {"snapshot_interval_s": 3}


def test_a_subprocess_environment_round_trips_under_the_new_names() -> None:
    settings = Settings().with_overrides(
        **{
            "kafka.bootstrap_servers": "b:1",
            "kafka.properties": {"sasl.password": "secret"},
            "delivery.processing_guarantee": "exactly-once",
        }
    )
    env = settings.as_env()
    assert env["STREAMAPP_KAFKA__BOOTSTRAP_SERVERS"] == "b:1"
    assert env["STREAMAPP_DELIVERY__PROCESSING_GUARANTEE"] == "exactly-once"
    assert "secret" not in repr(settings)
