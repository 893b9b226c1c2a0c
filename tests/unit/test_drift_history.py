"""The drift report renders real pipeline reports into a PNG and a self-contained page."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import orjson
import pytest

from streamapp.assembly import build_pipeline
from streamapp.codec import DecodedBatch
from streamapp.drift.history import load_reports, render_report
from streamapp.events import FeatureBlock, Feedback, SourcePosition
from streamapp.model.bundle import load_bundle
from streamapp.scenarios import get_scenario
from streamapp.settings import DriftSettings, Settings


@pytest.fixture(scope="module")
def reports(digits_bundle: Path) -> list[dict[str, object]]:
    """Reports of a pipeline over the digits-shift target stream, 200 events a window."""
    settings = Settings(model={"bundle": digits_bundle}, drift=DriftSettings(window_events=200))
    pipeline = build_pipeline(settings, load_bundle(digits_bundle))
    X, y, _ = get_scenario("digits-shift").target_data(2000)
    out = []
    for start in range(0, len(X), 100):
        ids = [f"e{i}" for i in range(start, start + 100)]
        ts = 1000.0 + start
        block = FeatureBlock(
            ids,
            [i.encode() for i in ids],
            X[start : start + 100].astype(np.float32),
            np.full(100, ts),
            [SourcePosition("features", 0, k) for k in range(start, start + 100)],
        )
        labels = [
            Feedback(i, int(c), ts + 1) for i, c in zip(ids, y[start : start + 100], strict=True)
        ]
        pipeline.clock = lambda ts=ts: ts
        out += pipeline.process(DecodedBatch(block, feedback=labels)).drift_reports
    return out


def test_the_png_and_the_page_show_the_drift_history(
    reports: list[dict[str, object]], tmp_path: Path
) -> None:
    assert len(reports) >= 5
    png, page = render_report(reports, tmp_path)  # type: ignore[arg-type]
    assert png.read_bytes().startswith(b"\x89PNG")
    assert png.stat().st_size > 30_000  # four panels of lines, areas and a matrix
    text = page.read_text()
    assert "data:image/png;base64," in text and "<script" not in text  # self-contained
    assert "Features of the last window" in text and text.count("<tr>") > 15


def test_the_cli_renders_a_jsonl_file_and_skips_bad_lines(
    reports: list[dict[str, object]], tmp_path: Path
) -> None:
    path = tmp_path / "drift.jsonl"
    lines = [orjson.dumps(r) for r in reports] + [b"{not json", b'{"other": 1}']
    path.write_bytes(b"\n".join(lines))
    assert len(load_reports(path)) == len(reports)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "streamapp",
            "report",
            "--from-file",
            str(path),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "out" / "drift.png").exists() and (tmp_path / "out" / "drift.html").exists()


def test_no_reports_is_a_clear_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    result = subprocess.run(
        [sys.executable, "-m", "streamapp", "report", "--from-file", str(empty)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and "no drift reports" in result.stderr
