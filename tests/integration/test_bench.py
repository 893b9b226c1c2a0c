"""The benchmarks run end to end (numbers are not asserted: they are measurements)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from streamapp.bench import run_throughput_bench
from streamapp.settings import Settings

pytestmark = pytest.mark.integration


def test_throughput_bench_runs_every_loop_and_writes_json(
    bootstrap_servers: str, digits_bundle: Path, tmp_path: Path
) -> None:
    settings = Settings(
        bootstrap_servers=bootstrap_servers,
        bundle=digits_bundle,
        kafka={"session.timeout.ms": "6000"},
    )
    result = run_throughput_bench(settings, events=600, out=tmp_path)
    rates = result["events_per_second"]
    assert set(rates) == {
        "passthrough",
        "minimal batched loop",
        "naive per-event loop",
        "streamapp worker",
        "learning (labels/s, in process)",
    }
    assert all(rate > 0 for rate in rates.values())
    assert orjson.loads((tmp_path / "throughput.json").read_bytes())["events"] == 600
