"""The registry's settings keep its credentials out of every printed form."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from streamapp.settings import SchemaRegistrySettings, Settings


def test_credentials_are_never_printed_and_reach_the_client() -> None:
    registry = SchemaRegistrySettings(
        url="https://registry:8081", basic_auth_user_info="app:s3cret", features_format="avro"
    )
    settings = Settings(schema_registry=registry)
    assert "s3cret" not in repr(settings) and "s3cret" not in str(settings.schema_registry)
    assert registry.client_config["basic.auth.user.info"] == "app:s3cret"
    assert registry.in_use


def test_credentials_in_the_url_are_refused_with_where_they_go() -> None:
    for url in ("http://app:s3cret@registry:8081", "http://r1:8081,http://app:s3cret@r2:8081"):
        with pytest.raises(ValidationError, match="basic_auth_user_info") as err:
            SchemaRegistrySettings(url=url)
        assert "s3cret" not in str(err.value)  # the refusal does not print the secret
        with pytest.raises(ValidationError) as err:
            Settings(schema_registry={"url": url})
        assert "s3cret" not in str(err.value)
    assert SchemaRegistrySettings(url="http://registry:8081/a@b").url  # an @ in the path is fine


def test_json_everywhere_uses_no_registry() -> None:
    assert not SchemaRegistrySettings().in_use


def test_the_faust_runtime_refuses_registry_formats_in_one_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its agents would let a registry outage escape as a traceback: JSON only, said at once."""
    from streamapp.cli import main

    monkeypatch.setenv("STREAMAPP_SCHEMA_REGISTRY__URL", "http://registry:8081")
    monkeypatch.setenv("STREAMAPP_SCHEMA_REGISTRY__FEATURES_FORMAT", "avro")
    monkeypatch.setattr("os.execvpe", _never)
    assert main(["run", "--runtime", "faust"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "faust runtime reads and writes JSON only" in err[0]


def _never(*args: object) -> None:
    raise AssertionError("the faust worker was started")
