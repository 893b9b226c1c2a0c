"""The loops the worker is compared with. Each reads the same backlog (features and labels)
and writes its outputs to its own topic; :func:`~streamapp.bench.common.output_rate` times
them all the same way.

- ``passthrough``: consume -> produce the bytes unchanged (the broker and client ceiling).
- ``minimal batched loop``: decode with orjson, score a batch in one forward pass, produce
  one small prediction per event; labels are read and ignored. What a careful 40-line
  script does, without validation, ledger, learning, drift or dead letters.
- ``naive per-event loop``: the same, one event at a time.
- ``faust per-event agent``: a faust-streaming agent that scores each event as it comes
  (:mod:`streamapp.bench.faust_agent`), in its own process.
- ``streamapp worker, faust runtime``: the full pipeline as batched Faust agents
  (:mod:`streamapp.faust_app`), in its own process.
- ``quix per-message app, numpy``: what a Quix Streams user writes, one message at a time
  (:mod:`streamapp.bench.quix_peer`), in its own process and virtualenv.
- ``streamapp worker``: the real thing, everything on.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from confluent_kafka import Producer

from streamapp.assembly import torch_threads
from streamapp.bench.common import plain_consumer, stop_process
from streamapp.kafka.config import producer_config
from streamapp.model.bundle import load_bundle
from streamapp.settings import Settings
from streamapp.worker import Worker

__all__ = [
    "SourceModel",
    "faust_agent",
    "faust_runtime",
    "minimal_loop",
    "passthrough",
    "peers_python",
    "prediction_records",
    "quix_peer",
    "run_worker",
]

logger = logging.getLogger(__name__)


def passthrough(settings: Settings, messages: int) -> None:
    consumer = plain_consumer(settings, settings.topics.inputs())
    producer = Producer(producer_config(settings))
    seen = 0
    while seen < messages:
        for msg in consumer.consume(1000, 1.0):
            if msg.error():
                continue
            producer.produce(settings.topics.predictions, msg.value(), msg.key())
            seen += 1
        producer.poll(0)
    producer.flush()
    consumer.close()


class SourceModel:
    """The bundle's backbone and source head in float32 torch, as a script would use them."""

    def __init__(self, settings: Settings) -> None:
        bundle = load_bundle(settings.model.bundle)
        pre = bundle.manifest.preprocessing
        self.mean = torch.tensor(pre["mean"], dtype=torch.float32)
        self.std = torch.tensor(pre["std"], dtype=torch.float32)
        self.coef = torch.tensor(bundle.head_coef, dtype=torch.float32)
        self.bias = torch.tensor(bundle.head_intercept, dtype=torch.float32)
        self.backbone = bundle.backbone.float().eval()
        self.classes = bundle.manifest.classes
        # the worker's threads, for a like-for-like comparison
        torch.set_num_threads(torch_threads(settings.model.torch_threads, self.backbone))

    def labels(self, rows: list[list[float]]) -> list[str]:
        with torch.inference_mode():
            x = torch.from_numpy(np.array(rows, np.float32))
            scores = self.backbone((x - self.mean) / self.std) @ self.coef.T + self.bias
            return [self.classes[i] for i in scores.argmax(dim=1).tolist()]


def prediction_records(docs: list[dict[str, Any]], labels: list[str]) -> list[bytes]:
    """The minimal loop's output: a small record per event, its id and predicted label."""
    return [
        orjson.dumps({"event_id": doc["event_id"], "label": label})
        for doc, label in zip(docs, labels, strict=True)
    ]


def minimal_loop(settings: Settings, messages: int, batch_size: int) -> None:
    """Batched (``batch_size`` > 1) or per-event scoring; labels are consumed and skipped."""
    model = SourceModel(settings)
    consumer = plain_consumer(settings, settings.topics.inputs())
    producer = Producer(producer_config(settings))
    out, features = settings.topics.predictions, settings.topics.features
    seen = 0
    while seen < messages:
        polled = [m for m in consumer.consume(batch_size, 1.0) if not m.error()]
        seen += len(polled)
        events = [m for m in polled if m.topic() == features]
        if not events:
            continue
        docs = [orjson.loads(m.value() or b"null") for m in events]
        values = prediction_records(docs, model.labels([d["features"] for d in docs]))
        for msg, value in zip(events, values, strict=True):
            producer.produce(out, value, msg.key())
        producer.poll(0)
    producer.flush()
    consumer.close()


def run_worker(settings: Settings, messages: int) -> Worker:
    worker = Worker(settings)
    try:
        worker.run(count=messages, timeout=900)
    finally:
        worker.close()
    return worker


def faust_agent(settings: Settings, events: int, timeout: float = 600.0) -> bool:
    """Run :mod:`streamapp.bench.faust_agent` in a ``faust worker`` process until it has
    written ``events`` predictions. Returns False when faust-streaming is not installed."""

    def env(datadir: str) -> dict[str, str]:
        return {
            **os.environ,
            "BENCH_BROKER": settings.kafka.bootstrap_servers or "",
            "BENCH_FEATURES": settings.topics.features,
            "BENCH_FEEDBACK": settings.topics.feedback,
            "BENCH_OUTPUT": settings.topics.predictions,
            "BENCH_GROUP": settings.kafka.group_id,
            "BENCH_BUNDLE": str(Path(settings.model.bundle).resolve()),  # it runs in datadir
            "BENCH_DATADIR": datadir,
        }

    command = [sys.executable, "-m", "faust", "-A", "streamapp.bench.faust_agent", "worker"]
    return _faust_process(settings, events, timeout, [*command, "-l", "warn", "--without-web"], env)


def faust_runtime(settings: Settings, events: int, timeout: float = 600.0) -> bool:
    """``streamapp run --runtime faust`` (the full pipeline as Faust agents, batched) until
    it has written ``events`` predictions. Returns False without faust-streaming."""
    # it runs in datadir
    run = settings.with_overrides(**{"model.bundle": Path(settings.model.bundle).resolve()})

    def env(_datadir: str) -> dict[str, str]:
        return run.subprocess_env()

    command = [sys.executable, "-m", "streamapp", "--log-level", "WARNING", "run"]
    return _faust_process(settings, events, timeout, [*command, "--runtime", "faust"], env)


def peers_python() -> Path | None:
    """The Python of the peers' virtualenv (``make bench-peers``): ``$BENCH_PEERS_VENV``, else
    ``.peers-venv`` in the working directory or in the checkout; None when there is none."""
    configured = os.environ.get("BENCH_PEERS_VENV")
    candidates = (
        [Path(configured)]
        if configured
        else [Path(".peers-venv"), Path(__file__).resolve().parents[2] / ".peers-venv"]
    )
    for venv in candidates:
        if (venv / "bin" / "python").exists():
            return (venv / "bin" / "python").absolute()  # not resolve(): keep the venv
    return None


def quix_peer(settings: Settings, events: int, mode: str = "numpy", timeout: float = 600.0) -> bool:
    """:mod:`streamapp.bench.quix_peer` in the peers' virtualenv until it has written ``events``
    predictions. Returns False (the row is skipped) when that virtualenv does not exist."""
    python = peers_python()
    if python is None:
        logger.warning("no peers virtualenv (make bench-peers): the Quix Streams row is skipped")
        return False
    script = Path(__file__).with_name("quix_peer.py")
    command = [
        str(python),
        str(script),
        settings.kafka.bootstrap_servers or "",
        settings.kafka.group_id,
        settings.topics.features,
        settings.topics.predictions,
        str(Path(settings.model.bundle).resolve()),
        str(events),
        mode,
    ]
    with tempfile.TemporaryDirectory(prefix="streamapp-quix-") as workdir:
        log_path = Path(workdir) / "quix.log"
        with log_path.open("wb") as log:  # quixstreams keeps its state directory in its cwd
            process = subprocess.Popen(command, cwd=workdir, stdout=subprocess.DEVNULL, stderr=log)
        try:
            _wait_for_outputs(settings, events, timeout, process, log_path, "quix peer")
        finally:
            stop_process(process)
    return True


def _faust_process(
    settings: Settings,
    events: int,
    timeout: float,
    command: list[str],
    env: Callable[[str], dict[str, str]],
) -> bool:
    """``command`` in a fresh data directory until ``events`` predictions are out."""
    try:
        import faust  # noqa: F401
    except ImportError:
        logger.warning("faust-streaming is not installed (pip install streamapp[faust])")
        return False
    with tempfile.TemporaryDirectory(prefix="streamapp-faust-") as datadir:
        log_path = Path(datadir) / "faust.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                command, env=env(datadir), cwd=datadir, stdout=subprocess.DEVNULL, stderr=log
            )
        try:
            _wait_for_outputs(settings, events, timeout, process, log_path)
        finally:
            stop_process(process)
    return True


def _wait_for_outputs(
    settings: Settings,
    events: int,
    timeout: float,
    process: subprocess.Popen[bytes],
    log_path: Path,
    name: str = "faust agent",
) -> None:
    consumer = plain_consumer(settings, [settings.topics.predictions])
    seen, deadline, exited = 0, time.monotonic() + timeout, False
    try:
        while seen < events:
            if not exited and process.poll() is not None:
                exited = True  # a peer that stops after its count: 15 s to read the rest
                deadline = min(deadline, time.monotonic() + 15.0)
            if time.monotonic() > deadline:
                log = log_path.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"{name}: {seen} of {events} outputs\n{log}")
            seen += sum(1 for m in consumer.consume(1000, 0.5) if not m.error())
    finally:
        consumer.close()
