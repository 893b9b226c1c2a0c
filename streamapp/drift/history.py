"""Drift history you can look at: a PNG and a self-contained HTML page from drift reports.

The reports come from the ``drift`` topic (read from the beginning, outside any consumer
group; JSON or, with ``schema_registry.output_format=avro``, Avro) or from a JSONL file of
them. The figure shows, over report time: PSI of the most
drifted features against their window-calibrated thresholds, the prediction distribution,
the head's rolling accuracy next to the frozen source head's with ADWIN/PageHinkley change
points marked, and the confusion matrix of the last window. ``streamapp report`` renders it;
one report is built by :mod:`streamapp.drift.report`.
"""

from __future__ import annotations

import base64
import html
import io
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamapp.codec.avro_in import AvroDocuments
from streamapp.errors import ConfigError
from streamapp.kafka.topic_reader import read_to_end
from streamapp.settings import Settings

__all__ = ["load_reports", "parse_report", "read_reports", "render_report"]

logger = logging.getLogger(__name__)

Report = dict[str, Any]
_TOP_FEATURES = 6


def load_reports(path: Path) -> list[Report]:
    """Drift reports from a JSONL file; lines that are not JSON objects are skipped, logged."""
    reports = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            document = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            logger.warning("%s:%d is not JSON (%s); skipped", path, number, exc)
            continue
        if isinstance(document, dict) and "report_seq" in document:
            reports.append(document)
        else:
            logger.warning("%s:%d is not a drift report; skipped", path, number)
    return reports


def read_reports(settings: Settings, topic: str, timeout: float = 30.0) -> list[Report]:
    """Every drift report on ``topic``, read up to its end when called: JSON, or Avro in
    the Confluent wire format (``schema_registry.output_format=avro``; each writer schema
    from the registry when ``schema_registry.url`` is set, else the twin in ``schemas/``)."""
    reports: list[Report] = []
    avro: AvroDocuments | None = None
    try:
        for msg in read_to_end(settings, topic, "report", timeout):
            value = msg.value() or b""
            if avro is None and AvroDocuments.is_avro(value):
                avro = _avro_reports(settings)
            try:
                reports.append(parse_report(value, avro))
            except ValueError as exc:  # orjson's JSONDecodeError is one
                where = f"{topic}[{msg.partition()}]@{msg.offset()}"
                logger.warning("%s is not a drift report (%s); skipped", where, exc)
    finally:
        if avro is not None and avro.client is not None:
            avro.client.close()
    return sorted(reports, key=lambda r: (r.get("ts", 0.0), r.get("report_seq", 0)))


def parse_report(value: bytes, avro: AvroDocuments | None = None) -> Report:
    """One drift report from the topic: JSON, or (with ``avro``) Avro in the Confluent wire
    format read back as its JSON document; ValueError when it is neither."""
    if avro is not None and AvroDocuments.is_avro(value):
        return avro.decode(value)
    document = orjson.loads(value)
    if not isinstance(document, dict):
        raise ValueError("not a JSON object")
    return document


def _avro_reports(settings: Settings) -> AvroDocuments:
    client = None
    if settings.schema_registry.url is not None:
        from streamapp.codec.wiring import registry_client

        client = registry_client(settings.schema_registry)
    return AvroDocuments("drift-report", client)


def render_report(reports: list[Report], out_dir: Path, name: str = "drift") -> tuple[Path, Path]:
    """Write ``<name>.png`` and ``<name>.html`` (the PNG embedded) into ``out_dir``."""
    if not reports:
        raise ConfigError("no drift reports to render")
    out_dir.mkdir(parents=True, exist_ok=True)
    png = _figure(reports)
    png_path = out_dir / f"{name}.png"
    png_path.write_bytes(png)
    html_path = out_dir / f"{name}.html"
    html_path.write_text(_page(reports, png), encoding="utf-8")
    logger.info("wrote %s and %s from %d reports", png_path, html_path, len(reports))
    return png_path, html_path


# -- the figure ------------------------------------------------------------------------------


def _times(reports: list[Report]) -> np.ndarray:
    ts = np.array([float(r["ts"]) for r in reports])
    return ts - ts[0]


def _top_features(reports: list[Report], k: int = _TOP_FEATURES) -> list[str]:
    """Features with the highest PSI relative to their threshold in any window."""
    worst: dict[str, float] = {}
    for report in reports:
        for f in report["features"]:
            ratio = f["psi"] / f["psi_threshold"] if f.get("psi_threshold") else f["psi"]
            worst[f["name"]] = max(worst.get(f["name"], 0.0), ratio)
    return sorted(worst, key=worst.__getitem__, reverse=True)[:k]


def _change_points(reports: list[Report]) -> dict[str, list[float]]:
    """Report times at which each detector fired (a report lists its window's firings)."""
    times = _times(reports)
    out: dict[str, list[float]] = {}
    for t, report in zip(times, reports, strict=True):
        for detector, summary in report.get("detectors", {}).items():
            out.setdefault(detector, []).extend([float(t)] * len(summary["change_points"]))
    return out


def _figure(reports: list[Report]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    from matplotlib import pyplot as plt

    t = _times(reports)
    fig, axes = plt.subplots(2, 2, figsize=(14, 9), constrained_layout=True)
    model = reports[-1].get("model", {})
    fig.suptitle(
        f"Drift of {model.get('name', '?')} {model.get('version', '')}: "
        f"{len(reports)} reports over {t[-1]:.0f} s"
    )
    _plot_psi(axes[0][0], reports, t)
    _plot_predictions(axes[0][1], reports, t)
    _plot_accuracy(axes[1][0], reports, t)
    _plot_confusion(axes[1][1], reports)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    plt.close(fig)
    return buffer.getvalue()


def _plot_psi(ax: Any, reports: list[Report], t: np.ndarray) -> None:
    for name in _top_features(reports):
        by_report = [next(f for f in r["features"] if f["name"] == name) for r in reports]
        line = ax.plot(t, [f["psi"] for f in by_report], marker=".", label=name)[0]
        thresholds = [f.get("psi_threshold", np.nan) for f in by_report]
        ax.plot(t, thresholds, linestyle="--", color=line.get_color(), linewidth=0.8)
    ax.set_yscale("symlog", linthresh=0.01)
    ax.set_title("PSI of the most drifted features (dashed: calibrated threshold)")
    ax.set_xlabel("seconds since the first report")
    ax.legend(fontsize="small", ncol=2)


def _plot_predictions(ax: Any, reports: list[Report], t: np.ndarray) -> None:
    classes = list(reports[-1]["prediction"]["counts"])
    counts = np.array([[r["prediction"]["counts"].get(c, 0) for c in classes] for r in reports])
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    ax.stackplot(t, shares.T, labels=classes)
    drifted = [x for x, r in zip(t, reports, strict=True) if r["prediction"]["drifted"]]
    ax.plot(drifted, [1.02] * len(drifted), "v", color="black", label="drifted")
    ax.set_ylim(0, 1.06)
    ax.set_title("Predicted class distribution per window")
    ax.set_xlabel("seconds since the first report")
    ax.legend(fontsize="x-small", ncol=6, loc="lower left")


def _plot_accuracy(ax: Any, reports: list[Report], t: np.ndarray) -> None:
    for key, label in (("accuracy", "online head"), ("source_accuracy", "frozen source head")):
        values = [r["performance"].get(key, np.nan) for r in reports]
        ax.plot(t, values, marker=".", label=f"{label} (rolling)")
    styles = {"adwin": ("tab:red", "-"), "page_hinkley": ("tab:purple", ":")}
    for detector, times in _change_points(reports).items():
        color, style = styles.get(detector, ("gray", "--"))
        for i, x in enumerate(times):
            ax.axvline(
                x, color=color, linestyle=style, alpha=0.6, label=detector if i == 0 else None
            )
    ax.set_ylim(0, 1)
    ax.set_title("Accuracy on delayed labels, change points on the error stream")
    ax.set_xlabel("seconds since the first report")
    ax.legend(fontsize="small")


def _plot_confusion(ax: Any, reports: list[Report]) -> None:
    last = next((r for r in reversed(reports) if r["performance"].get("confusion")), None)
    ax.set_title("Confusion matrix of the last window with labels")
    if last is None:
        ax.text(0.5, 0.5, "no labels yet", ha="center", va="center")
        ax.set_axis_off()
        return
    cm = np.array(last["performance"]["confusion"])
    classes = list(last["prediction"]["counts"])
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes)
    ax.set_yticks(range(len(classes)), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for (i, j), value in np.ndenumerate(cm):
        if value:
            color = "white" if value > cm.max() / 2 else "black"
            ax.text(j, i, str(value), ha="center", va="center", fontsize="x-small", color=color)


# -- the page --------------------------------------------------------------------------------


def _rows(cells: Iterable[Iterable[object]]) -> str:
    return "\n".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in cells
    )


def _page(reports: list[Report], png: bytes) -> str:
    last = reports[-1]
    model = last.get("model", {})
    performance = last["performance"]
    summary = [
        ("model", f"{model.get('name', '?')} {model.get('version', '')}"),
        ("head_seq (examples learned)", model.get("head_seq", "?")),
        ("reports", len(reports)),
        ("events in the last window", last["window"]["events"]),
        ("drifted features (last window)", last["dataset"]["drifted_features"]),
        ("dataset drifted (last window)", last["dataset"]["drifted"]),
        ("rolling accuracy: head / source", _pair(performance, "accuracy", "source_accuracy")),
        ("change points", {d: len(v) for d, v in _change_points(reports).items()}),
    ]
    features = sorted(last["features"], key=lambda f: f["psi"], reverse=True)[:15]
    feature_rows = [
        (
            f["name"],
            f"{f['psi']:.4f}",
            f"{f['psi_threshold']:.4f}" if "psi_threshold" in f else "",
            f"{f['js']:.4f}",
            f"{f['p_value']:.2g}",
            "yes" if f["drifted"] else "",
        )
        for f in features
    ]
    image = base64.b64encode(png).decode()
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>streamapp drift report: {html.escape(str(model.get("name", "")))}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
td, th {{ border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: left; }}
img {{ max-width: 100%; }}
</style></head><body>
<h1>Drift report</h1>
<table>{_rows(summary)}</table>
<img alt="drift history" src="data:image/png;base64,{image}">
<h2>Features of the last window, by PSI</h2>
<table><tr><th>feature</th><th>PSI</th><th>threshold</th><th>JS</th><th>p-value</th>
<th>drifted</th></tr>
{_rows(feature_rows)}</table>
</body></html>
"""


def _pair(performance: dict[str, Any], a: str, b: str) -> str:
    if a not in performance:
        return "no labels yet"
    return f"{performance[a]:.3f} / {performance[b]:.3f}"
