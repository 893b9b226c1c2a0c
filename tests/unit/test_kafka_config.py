"""Client configurations: the defaults the latency depends on, and the passthrough over them."""

from __future__ import annotations

from streamapp.kafka.config import producer_config, transactional_producer_config
from streamapp.settings import Settings


def test_output_producers_send_a_batch_without_lingering() -> None:
    settings = Settings(bootstrap_servers="localhost:9092", instance_id="w1")
    assert producer_config(settings)["linger.ms"] == 0
    assert transactional_producer_config(settings)["linger.ms"] == 0


def test_the_passthrough_still_sets_linger() -> None:
    settings = Settings(bootstrap_servers="localhost:9092", kafka={"linger.ms": "5"})
    assert producer_config(settings)["linger.ms"] == "5"
