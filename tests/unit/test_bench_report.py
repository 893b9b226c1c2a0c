"""The targets, the relay comparison and the scale-out line, from a bench result (no broker, no
timing)."""

from __future__ import annotations

from typing import Any

from streamapp.bench.latency import ONE_HOP, RELAY, WORKER
from streamapp.bench.scaleout import partitions_for, scorer_name
from streamapp.bench.suite import (
    DEFAULT_SUITES,
    SUITES,
    _against_relay,
    _targets,
    render_markdown,
)
from streamapp.cli import build_parser


def level(path: str, load: int, p50: float, p99: float) -> dict[str, Any]:
    return {"path": path, "offered_per_s": load, "p50_ms": p50, "p99_ms": p99}


RESULT = {
    "latency": [
        level(ONE_HOP, 1000, 0.5, 5.0),
        level(ONE_HOP, 2000, 0.7, 10.0),
        level(RELAY, 1000, 1.0, 80.0),
        level(RELAY, 2000, 1.5, 100.0),
        level(WORKER, 1000, 2.0, 40.0),
        level(WORKER, 2000, 3.5, 50.0),
    ]
}


def test_latency_targets_compare_the_worker_with_one_hop_at_2k() -> None:
    targets = _targets(RESULT)
    assert targets["worker adds <= 3 ms p50 over one hop at 2k events/s"] == {
        "value": 2.8,
        "met": True,
    }
    assert targets["worker p99 <= 3x one-hop p99 at 2k events/s"] == {"value": 5.0, "met": False}


def test_the_worker_is_compared_with_the_plain_relay_at_every_load() -> None:
    [sentence, blank] = _against_relay(RESULT)
    assert sentence == (
        "At 1,000 events/s the worker adds +1.0 ms at p50 over the plain relay's two hops; "
        "its p99 is 0.50x the relay's (40.0 vs 80.0 ms). "
        "At 2,000 events/s the worker adds +2.0 ms at p50 over the plain relay's two hops; "
        "its p99 is 0.50x the relay's (50.0 vs 100.0 ms)."
    )
    assert blank == ""


def test_a_level_that_delivered_nothing_is_left_out() -> None:
    levels = RESULT["latency"]
    silent = {"latency": [*levels[:3], {"path": RELAY, "offered_per_s": 2000}, *levels[4:]]}
    [sentence, _] = _against_relay(silent)
    assert sentence.startswith("At 1,000 events/s") and "2,000" not in sentence
    assert _against_relay({"latency": [level(ONE_HOP, 2000, 0.7, 10.0)]}) == []


def scaled(rates: dict[int, int]) -> dict[str, Any]:
    names = {count: scorer_name(count) for count in rates}
    fewest = rates[min(rates)]
    return {
        "machine": {"platform": "linux", "cpus": 16, "python": "3.11", "torch": "2", "cuda": None},
        "started": "2026-11-24 08:00",
        "broker": "noida-db 0.2.3, started on this machine",
        "scaleout": {
            "events": 80_000,
            "partitions": partitions_for(tuple(rates)),
            "events_per_second": {names[c]: rate for c, rate in rates.items()},
            "over_fewest": {names[c]: round(rate / fewest, 2) for c, rate in rates.items()},
        },
    }


def test_the_scale_out_target_compares_four_scorers_with_one() -> None:
    result = scaled({1: 10_000, 2: 19_000, 4: 33_000})
    assert _targets(result)["4 scorers >= 3.2x one scorer (8+ cores)"] == {
        "value": 3.3,
        "met": True,
    }
    assert _targets(scaled({1: 10_000, 4: 19_100}))["4 scorers >= 3.2x one scorer (8+ cores)"] == {
        "value": 1.91,
        "met": False,
    }
    assert _targets(scaled({1: 10_000, 2: 19_000})) == {}  # no run with 4: no verdict


def test_the_scale_out_line_gives_each_count_over_one_scorer() -> None:
    table = render_markdown({**scaled({1: 10_000, 4: 33_000}), "targets": {}})
    assert table.splitlines()[0].endswith("broker: noida-db 0.2.3, started on this machine.")
    assert "8 partitions" in table
    assert "1 scorer process 10,000 events/s (1.00x), 4 scorer processes 33,000 events/s" in table
    assert "(3.30x)" in table
    older = scaled({1: 10_000, 2: 19_000})  # a bench.json written before the ratios
    del older["scaleout"]["over_fewest"]
    assert "2 scorer processes 19,000 events/s." in render_markdown({**older, "targets": {}})


def test_bench_takes_the_scorer_counts_to_run() -> None:
    args = build_parser().parse_args(["bench", "scaleout", "--scorers", "1,2,4"])
    assert args.scorers == [1, 2, 4]
    assert build_parser().parse_args(["bench"]).scorers == (1, 2)


PROFILE = {
    "events": 20_000,
    "batch_messages": 500,
    "rounds": 3,
    "minimal_us_per_event": {"parse": 3.0, "score": 1.8, "encode": 0.2, "total": 5.0},
    "worker_us_per_event": {
        "decode": 10.2,
        "score": 1.2,
        "ledger, learning and drift": 9.5,
        "encode": 2.5,
        "total": 23.4,
    },
    "minimal_over_worker": 0.214,
    "predictions": {"minimal": 20_000, "worker": 20_000},
}


def test_the_profile_line_gives_every_part_and_the_ratio() -> None:
    table = render_markdown({**scaled({1: 10_000}), "profile": PROFILE, "targets": {}})
    assert "20,000 events in batches of 500 messages, medians of 3 alternating rounds" in table
    assert "minimal loop parse 3.0 + score 1.8 + encode 0.2 = 5.0;" in table
    assert (
        "streamapp worker decode 10.2 + score 1.2 + ledger, learning and drift 9.5 + "
        "encode 2.5 = 23.4: were Kafka free, the worker would run at 0.21x" in table
    )
    assert _targets({"profile": PROFILE}) == {}  # a diagnosis, not a target


def test_profile_is_a_default_bench_suite() -> None:
    assert "profile" in DEFAULT_SUITES and "profile" in SUITES
    assert build_parser().parse_args(["bench", "profile"]).suites == ["profile"]


def test_the_heavy_backbone_is_judged_by_the_worker_over_the_backbone_alone() -> None:
    heavy = {
        "architecture": "64->4096->4096->256",
        "batch": 500,
        "torch_threads": 1,
        "events": 4000,
        "backbone_rows_per_s": 1200,
        "worker_events_per_s": 1020,
        "worker_over_backbone": 0.85,
    }
    target = "heavy backbone: worker >= 0.8x the backbone's rows/s (CPU)"
    assert _targets({"heavy": heavy})[target] == {"value": 0.85, "met": True}
    slow = {**heavy, "worker_over_backbone": 0.04}
    assert _targets({"heavy": slow})[target] == {"value": 0.04, "met": False}
    table = render_markdown({**scaled({1: 10_000}), "heavy": heavy, "targets": {}})
    assert "the backbone alone embeds 1,200 rows/s" in table
    assert "scores 1,020 events/s (4,000 events with their labels), 0.85x" in table
    assert "heavy" in SUITES and "heavy" not in DEFAULT_SUITES
