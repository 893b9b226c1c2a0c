"""Fixtures only some integration tests use: started by the first test that asks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from streamapp.errors import BrokerError
from streamapp.kafka.apache import java_missing
from streamapp.kafka.schema_registry import ApicurioRegistry


@pytest.fixture(scope="session")
def schema_registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApicurioRegistry]:
    """A real Confluent-compatible Schema Registry (Apicurio, built from Maven Central once
    into ``.streamapp/``), one per session; tests keep apart by their topics' subjects."""
    why = java_missing()
    if why is not None:
        pytest.skip(f"no schema registry: {why}")
    registry = ApicurioRegistry(tmp_path_factory.mktemp("schema-registry"))
    try:
        registry.start()
    except BrokerError as exc:
        pytest.fail(f"Apicurio Registry did not start: {exc}")
    try:
        yield registry
    finally:
        registry.stop()
