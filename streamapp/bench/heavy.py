"""A heavy backbone: the worker's rate against the backbone's own, at the same batch size.

With a small backbone the worker's cost is Python per event; with a large one it is the
forward pass, and the question is how much of the backbone's own rate the worker keeps
(decode, learning, drift and the broker around it). The backbone is the issue's
64 -> 4096 -> 4096 -> 256 MLP, trained for one epoch on the digits source (its speed is what
is measured: trained weights cost what random ones do). Both sides use the threads the worker
gives torch on this machine (:func:`streamapp.assembly.torch_threads`), and the backbone's
rows/s is the median of three one-second runs on the target stream's rows.
"""

from __future__ import annotations

import logging
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from streamapp.assembly import torch_threads
from streamapp.bench.common import SCENARIO, Backlog, output_rate
from streamapp.bench.loops import run_worker
from streamapp.model.bundle import load_bundle
from streamapp.model.training import train_source_bundle
from streamapp.model.variants import make_embedder
from streamapp.scenarios import get_scenario
from streamapp.settings import Settings

__all__ = ["LAYERS", "heavy_bundle", "measure_heavy"]

logger = logging.getLogger(__name__)

LAYERS = (4096, 4096, 256)
"""The backbone's layer widths after its 64 inputs: hidden layers, then the embedding."""


def heavy_bundle(path: Path, layers: tuple[int, ...] = LAYERS) -> Path:
    """A bundle whose backbone has ``layers`` at ``path``, trained (briefly) the first time."""
    if not (path / "manifest.json").exists():
        *hidden, embedding = layers
        scenario = get_scenario(SCENARIO)
        train_source_bundle(
            scenario, path, name="heavy", hidden=hidden, embedding_dim=embedding, epochs=1
        )
    return path


def backbone_rows_per_second(bundle_path: Path, X: np.ndarray, batch: int) -> float:
    """The backbone alone, as the worker embeds: rows/s at ``batch`` rows a call."""
    embed = make_embedder(load_bundle(bundle_path), "torch")
    embed(X[:batch])  # warm up
    rates = []
    for _ in range(3):
        rows, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < 1.0:
            start = rows % (len(X) - batch + 1)
            embed(X[start : start + batch])
            rows += batch
        rates.append(rows / elapsed)
    return statistics.median(rates)


def measure_heavy(
    settings: Settings, workdir: Path, events: int = 4000, layers: tuple[int, ...] = LAYERS
) -> dict[str, Any]:
    """The heavy backbone's rows/s alone and the worker's events/s with it, side by side."""
    bundle_path = heavy_bundle(workdir / "heavy-bundle", layers)
    bundle = load_bundle(bundle_path)
    batch = settings.batch.max_size
    threads = torch_threads(settings.model.torch_threads, bundle.backbone)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        X, _, _ = get_scenario(SCENARIO).target_data(max(4 * batch, 2000))
        alone = backbone_rows_per_second(bundle_path, X.astype(np.float32), batch)
    finally:
        torch.set_num_threads(previous)
    backlog = Backlog(settings, "heavy").fill(events)
    run = backlog.for_loop("heavy", **{"model.bundle": bundle_path, "model.device": "cpu"})
    run_worker(run, backlog.messages)
    worker = output_rate(run, run.topics.predictions, events)
    result = {
        "architecture": "->".join(map(str, [bundle.manifest.input_dim, *layers])),
        "batch": batch,
        "torch_threads": threads,
        "events": events,
        "backbone_rows_per_s": round(alone),
        "worker_events_per_s": round(worker),
        "worker_over_backbone": round(worker / alone, 3),
    }
    logger.info("heavy backbone: %s", result)
    return result
