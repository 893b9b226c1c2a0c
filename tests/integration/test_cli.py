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
        str(settings.kafka.bootstrap_servers),
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


def test_the_demo_runs_on_its_embedded_broker_with_no_setup(
    digits_bundle: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``make run``'s path: no bootstrap servers, so the demo starts noida-db itself (a user
    without Java still gets the demo in two commands)."""
    monkeypatch.delenv("STREAMAPP_BOOTSTRAP_SERVERS", raising=False)
    args = ["demo", "--bundle", str(digits_bundle), "--events", "500", "--rate", "4000"]
    assert main([*args, "--label-delay", "0.2"]) == 0
    shown = capsys.readouterr().out
    assert "streamapp demo - done" in shown
    assert "500" in shown  # events scored


def test_topics_says_when_partitions_are_fewer_and_grows_them(
    make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]
) -> None:
    from streamapp.kafka.admin import partition_counts

    settings = make_settings(partitions=1)
    env = settings.as_env()
    names = {k: v for k, v in env.items() if k.startswith("STREAMAPP_TOPICS__")}
    args = ["topics", "-b", str(settings.kafka.bootstrap_servers), "--partitions", "2", "--role"]
    with pytest.MonkeyPatch.context() as patch:
        for key, value in names.items():
            patch.setenv(key, value)
        assert main([*args, "producer"]) == 0
        shown = capsys.readouterr().out
        assert f"{settings.topics.features} has 1 partition(s), 2 asked" in shown
        inputs = settings.topics.inputs()
        assert set(partition_counts(settings, inputs).values()) == {1}  # unchanged
        assert main([*args, "producer", "--grow"]) == 0
        assert "warning: keys written before the change" in capsys.readouterr().out
    assert partition_counts(settings, inputs) == {name: 2 for name in inputs}


def test_create_topics_makes_only_what_the_role_and_features_use() -> None:
    from streamapp.kafka.admin import topic_specs

    plain = Settings()
    assert [t.name for t in topic_specs(plain, "producer")] == ["features", "feedback"]
    assert "streamapp-state" not in [t.name for t in topic_specs(plain, "all")]
    eos = plain.with_overrides(
        **{"delivery.processing_guarantee": "exactly-once", "challenger.enabled": True}
    )
    names = [t.name for t in topic_specs(eos, "all")]
    assert "streamapp-state" in names and "shadow-predictions" in names
    assert "training-examples" not in names
    learner = [t.name for t in topic_specs(plain, "learner")]
    assert learner == ["training-examples", "model-updates"]
    assert len(topic_specs(plain)) == 10  # `topics` with no role: every topic
