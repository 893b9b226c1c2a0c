"""The composition root: settings in, the worker's parts out (codec, head, pipeline, bundle).

Configuration does no I/O and the runtimes build nothing themselves: the worker, the learner,
the Faust runtime and the challenger all get their parts here (uvicorn's ``Config.load()``
-> ``Server`` split).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from streamapp.codec import Codec
from streamapp.drift.monitor import DriftMonitor
from streamapp.ledger import PendingLedger
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.head import OnlineHead, make_head
from streamapp.model.variants import make_embedder
from streamapp.pipeline import Pipeline
from streamapp.settings import Settings

__all__ = [
    "build_codec",
    "build_head",
    "build_pipeline",
    "load_served_bundle",
    "served_bundle_path",
]

logger = logging.getLogger(__name__)


def served_bundle_path(settings: Settings) -> Path:
    """The bundle to serve: ``model_name@model_alias`` from the registry, else ``bundle``."""
    if settings.registry is None or settings.model_name is None:
        return settings.bundle
    from streamapp.model.registry import Registry

    registry = Registry(settings.registry)
    ref = registry.resolve(settings.model_name, settings.model_alias)
    return registry.path(ref.name, ref.version)


def load_served_bundle(settings: Settings) -> Bundle:
    """The verified bundle ``settings`` say to serve."""
    return load_bundle(served_bundle_path(settings))


def build_codec(settings: Settings, bundle: Bundle) -> Codec:
    """The codec for ``bundle``'s features and classes on the configured topics."""
    m = bundle.manifest
    return Codec(
        m.feature_names,
        m.classes,
        features_topic=settings.topics.features,
        feedback_topic=settings.topics.feedback,
        max_abs_value=settings.max_abs_value,
        max_payload_bytes=settings.max_payload_bytes,
        max_future_skew_s=settings.max_future_skew_s,
        dead_letter_payload_bytes=settings.dead_letter_payload_bytes,
        missing=settings.missing,
    )


def build_head(settings: Settings, bundle: Bundle) -> OnlineHead:
    """The online head, warm-started from ``bundle``'s source head."""
    h = settings.head
    return make_head(
        h.kind,
        bundle.head_coef,
        bundle.head_intercept,
        bundle.manifest.classes,
        learning_rate=h.learning_rate,
        eta0=h.eta0,
        alpha=h.alpha,
        seed=h.seed,
    )


def build_pipeline(settings: Settings, bundle: Bundle) -> Pipeline:
    """The pipeline for ``bundle`` as ``settings`` configure it (torch threads included)."""
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    m = bundle.manifest
    head = build_head(settings, bundle)
    embed = make_embedder(bundle, settings.variant, settings.device, settings.half)
    ledger = PendingLedger(
        settings.ledger.max_entries,
        m.embedding_dim,
        len(m.classes),
        settings.ledger.ttl_s,
        settings.ledger.early_label_ttl_s,
        settings.ledger.max_parked,
    )
    d = settings.drift
    monitor = DriftMonitor(
        bundle.reference,
        m.feature_names,
        m.classes,
        window_events=d.window_events,
        interval_s=d.interval_s,
        min_events=d.min_events,
        alpha=d.alpha,
        dataset_drift_share=d.dataset_drift_share,
        performance_window=d.performance_window,
    )
    return Pipeline(
        embed,
        head,
        bundle.head_coef,
        bundle.head_intercept,
        ledger,
        monitor,
        model_name=m.name,
        model_version=m.version,
        learn_locally=settings.role == "all",  # a scorer leaves learning to the learner
    )
