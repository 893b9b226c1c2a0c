"""The CLI commands, run in-process against the real broker."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from streamapp.cli import main
from streamapp.settings import Settings
from tests.conftest import read_topic

pytestmark = pytest.mark.integration


def test_train_source_then_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "hyperplane" / "1"
    assert (
        main(["train-source", "--scenario", "hyperplane", "--out", str(out), "--epochs", "5"]) == 0
    )
    assert main(["models", "verify", str(out)]) == 0
    assert "OK hyperplane 1" in capsys.readouterr().out
    (out / "head.npz").write_bytes(b"tampered")
    assert main(["models", "verify", str(out)]) == 2  # a clear error, not a traceback


def test_produce_feeds_a_cluster(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = make_settings()
    monkeypatch.setenv("STREAMAPP_TOPICS__FEATURES", settings.topics.features)
    monkeypatch.setenv("STREAMAPP_TOPICS__FEEDBACK", settings.topics.feedback)
    args = [
        "produce",
        "-b",
        str(settings.bootstrap_servers),
        "--scenario",
        "hyperplane",
        "--events",
        "50",
        "--label-fraction",
        "0.5",
    ]
    assert main(args) == 0
    events = read_topic(settings, settings.topics.features, expected=50)
    labels = read_topic(settings, settings.topics.feedback, timeout=5, idle=1)
    assert len(events) == 50
    assert 10 < len(labels) < 40
    assert {doc["event_id"] for _, doc in labels} <= {doc["event_id"] for _, doc in events}


def test_demo_runs_end_to_end_on_a_given_cluster(
    bootstrap_servers: str, digits_bundle: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "demo",
        "-b",
        bootstrap_servers,
        "--bundle",
        str(digits_bundle),
        "--events",
        "2000",
        "--rate",
        "4000",
        "--label-delay",
        "0.2",
        "--group-id",
        "demo-test",
    ]
    assert main(args) == 0
    shown = capsys.readouterr().out
    assert "streamapp demo - done" in shown
    assert "2,000" in shown  # events scored
    assert "unknown_label 1" in shown  # the demo's bad inputs were dead-lettered
