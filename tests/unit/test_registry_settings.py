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
