"""The composition root: settings in, the worker's parts out (codec, head, pipeline, bundle).

Configuration does no I/O and the runtimes build nothing themselves: the worker, the learner,
the Faust runtime and the challenger all get their parts here (uvicorn's ``Config.load()``
-> ``Server`` split).
"""

from __future__ import annotations

import functools
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from streamapp.codec import Codec
from streamapp.codec.wiring import use_registry
from streamapp.conformal import ConformalCalibrator
from streamapp.drift.monitor import DriftMonitor
from streamapp.errors import ConfigError
from streamapp.guard import SafeAdaptationGuard
from streamapp.ledger import PendingLedger
from streamapp.model.adapt import InputAdapter
from streamapp.model.backbone import Embedder
from streamapp.model.bundle import Bundle, load_bundle
from streamapp.model.finetune import FinetuneHead
from streamapp.model.head import OnlineHead, make_head
from streamapp.model.surgery import auto_layers, cut_width, split_backbone
from streamapp.model.variants import make_embedder
from streamapp.pipeline import Companion, Embed, Pipeline
from streamapp.regression.finetune import RegressionFinetuneHead
from streamapp.regression.guard import RegressionGuard
from streamapp.regression.head import LinearRegressionHead, RegressionHead
from streamapp.regression.inputs import WithInputs
from streamapp.regression.monitor import RegressionMonitor
from streamapp.regression.pipeline import RegressionPipeline
from streamapp.selection import Candidates
from streamapp.settings import Settings

__all__ = [
    "build_candidates",
    "build_embedder",
    "finetune_layers",
    "build_codec",
    "build_head",
    "build_pipeline",
    "build_regression_head",
    "build_regression_pipeline",
    "is_regression",
    "load_served_bundle",
    "served_bundle_path",
    "torch_threads",
]

logger = logging.getLogger(__name__)


def served_bundle_path(settings: Settings) -> Path:
    """The bundle to serve: ``model_name@model_alias`` from the registry, else ``bundle``."""
    if settings.model.registry is None or settings.model.name is None:
        return settings.model.bundle
    from streamapp.model.registry import Registry

    registry = Registry(settings.model.registry)
    ref = registry.resolve(settings.model.name, settings.model.alias)
    return registry.path(ref.name, ref.version)


def load_served_bundle(settings: Settings) -> Bundle:
    """The verified bundle ``settings`` say to serve."""
    return load_bundle(served_bundle_path(settings))


def build_codec(settings: Settings, bundle: Bundle) -> Codec:
    """The codec for ``bundle``'s features and classes on the configured topics."""
    m = bundle.manifest
    codec = Codec(
        m.feature_names,
        m.classes,
        features_topic=settings.topics.features,
        feedback_topic=settings.topics.feedback,
        max_abs_value=settings.input.max_abs_value,
        max_abs_target=settings.input.max_abs_target,
        max_payload_bytes=settings.input.max_payload_bytes,
        max_future_skew_s=settings.input.max_future_skew_s,
        dead_letter_payload_bytes=settings.input.dead_letter_payload_bytes,
        missing=settings.input.missing,
        task="regression" if is_regression(bundle) else "classification",
    )
    use_registry(codec, settings)  # topics in a Schema Registry format (default: none)
    return codec


def finetune_layers(settings: Settings, bundle: Bundle) -> int | str:
    """How many top backbone layers learn online: ``finetune.layers`` with ``"auto"``
    resolved (where the backbone can be fine-tuned, the top layers within
    :data:`~streamapp.model.surgery.AUTO_WEIGHTS` weights, else 0); asking for layers a
    backbone cannot train is a one-line configuration error."""
    layers = settings.finetune.layers
    if layers == 0:
        return 0
    if is_regression(bundle) and layers == "auto":
        return 0  # the recursive-ridge head follows a drift in a few hundred labels
    why_not = _cannot_finetune(settings, bundle)
    if why_not is None and layers == "auto":
        tuned = auto_layers(bundle.backbone)
        if tuned != "all":
            _say_once(f"finetune.layers=auto: {tuned} top layer(s) of a large backbone learn")
        return tuned
    if why_not is None:
        return layers
    if layers == "auto":
        _say_once(f"head-only learning: {why_not}")
        return 0
    raise ConfigError(f"finetune.layers={layers}: {why_not}; set finetune.layers=0")


@functools.cache
def _say_once(message: str) -> None:
    """Log ``message`` once per process (a restore builds the pipeline again)."""
    logger.info(message)


def _cannot_finetune(settings: Settings, bundle: Bundle) -> str | None:
    m = bundle.manifest
    if settings.model.variant != "torch":
        return f"the {settings.model.variant} variant is head-only"
    if m.backbone_format == "onnx":
        return "an ONNX backbone is head-only (import a .pt2 or safetensors to fine-tune)"
    if m.input_shape is not None and len(m.input_shape) > 1:
        return "a backbone of shaped inputs is fine-tuned only in its head"
    return None


def build_head(settings: Settings, bundle: Bundle) -> OnlineHead:
    """The online head, warm-started from ``bundle``'s source head; with fine-tuning, the
    top backbone layers plus that head, trained by a torch optimizer. A regression bundle's is
    :func:`build_regression_head`'s."""
    if is_regression(bundle):
        return build_regression_head(settings, bundle)  # type: ignore[return-value]
    layers = finetune_layers(settings, bundle)
    if layers != 0:
        _, top = _split(bundle, layers)
        return FinetuneHead(
            top,
            bundle.head_coef,
            bundle.head_intercept,
            bundle.manifest.classes,
            **_optimizer(settings),
        )
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


def _optimizer(settings: Settings) -> dict[str, Any]:
    """How a fine-tuning head steps (both tasks'): ``settings.finetune`` and the device."""
    f = settings.finetune
    return {
        "optimizer": f.optimizer,
        "lr": f.lr,
        "weight_decay": f.weight_decay,
        "momentum": f.momentum,
        "step_size": f.step_size,
        "device": settings.model.device,
    }


def build_embedder(settings: Settings, bundle: Bundle) -> tuple[Embed, int]:
    """The frozen part of the backbone (features -> what the ledger keeps per served row)
    and the width of its output: the embedding, or the activations at the fine-tuning cut; a
    regression bundle's head-only rows carry the standardized inputs too
    (``regression.with_inputs``)."""
    m = bundle.manifest
    layers = finetune_layers(settings, bundle)
    if layers == 0:
        embed = make_embedder(
            bundle, settings.model.variant, settings.model.device, settings.model.half
        )
        if _with_inputs(settings, bundle):
            pre = m.preprocessing
            wide = WithInputs(embed, np.asarray(pre["mean"]), np.asarray(pre["std"]))
            return wide, m.embedding_dim + m.input_dim
        return embed, m.embedding_dim
    lower, _ = _split(bundle, layers)
    pre = m.preprocessing
    embed = Embedder(
        lower,
        np.asarray(pre["mean"]),
        np.asarray(pre["std"]),
        device=settings.model.device,
        impute=bundle.reference.mean,
    )
    return embed, cut_width(lower, m.input_dim)


def _split(bundle: Bundle, layers: int | str) -> tuple[torch.nn.Module, torch.nn.Module]:
    try:
        return split_backbone(bundle.backbone, layers)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"finetune.layers={layers}: {exc}") from None


# Backbone multiply-adds per row that make one more intra-op thread pay for itself: below
# it, a batch's forward pass is too short for the threads' hand-offs (and their spinning
# against the broker client for the cores) to win.
FLOPS_PER_THREAD = 500_000


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def torch_threads(configured: int, backbone: torch.nn.Module, cores: int | None = None) -> int:
    """Intra-op threads for ``backbone``: ``configured`` when positive; for 0 (auto), one per
    :data:`FLOPS_PER_THREAD` floating-point operations per row (2 per weight of its matrices),
    at least 1 and at most the cores but one (the broker client's threads need a core).

    >>> small = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.Linear(64, 32))
    >>> heavy = torch.nn.Sequential(torch.nn.Linear(64, 4096), torch.nn.Linear(4096, 4096))
    >>> torch_threads(0, small, cores=16), torch_threads(0, heavy, cores=16)
    (1, 15)
    >>> torch_threads(0, heavy, cores=2), torch_threads(4, small, cores=2)
    (1, 4)
    """
    if configured > 0:
        return configured
    flops = 2 * sum(p.numel() for p in backbone.parameters() if p.dim() >= 2)
    available = max(1, (cores or _cores()) - 1)
    return max(1, min(available, flops // FLOPS_PER_THREAD))


def build_pipeline(
    settings: Settings, bundle: Bundle, companion: Companion | None = None
) -> Pipeline:
    """The pipeline for ``bundle`` as ``settings`` configure it (torch threads included),
    with ``companion`` (a challenger) processing its batches in shadow."""
    threads = torch_threads(settings.model.torch_threads, bundle.backbone)
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
        logger.info("torch intra-op threads: %d", threads)
    # numpy's BLAS (the fine-tuning step, the source head) too: left at one thread per core,
    # its threads spin against the broker client's on a busy machine (25x slower here)
    threadpool_limits(threads, user_api="blas")
    if is_regression(bundle):
        return build_regression_pipeline(settings, bundle, companion)
    m = bundle.manifest
    head = build_head(settings, bundle)
    embed, width = build_embedder(settings, bundle)
    candidates = build_candidates(settings, bundle)
    extra = candidates.extra_width if candidates is not None else 0
    ledger = _ledger(settings, width + extra, len(m.classes))
    monitor = DriftMonitor(bundle.reference, m.feature_names, m.classes, **_windows(settings))
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
        guard=SafeAdaptationGuard(settings.guard) if settings.guard.enabled else None,
        instance=settings.delivery.instance_id,
        companion=companion,
        conformal=_calibrator(settings),
        candidates=candidates,
    )


def is_regression(bundle: Bundle) -> bool:
    """Whether ``bundle`` serves a numeric target (its manifest's ``task``)."""
    return bundle.manifest.task == "regression"


def _ledger(
    settings: Settings, width: int, outputs: int, labels: type[np.generic] = np.int64
) -> PendingLedger:
    """The pending ledger: rows of ``width`` columns, ``outputs`` served columns (the class
    probabilities, or a regression model's value), labels of dtype ``labels``."""
    led = settings.ledger
    return PendingLedger(
        led.max_entries,
        width,
        outputs,
        led.ttl_s,
        led.early_label_ttl_s,
        led.max_parked,
        label_dtype=labels,
    )


def _windows(settings: Settings) -> dict[str, Any]:
    """The drift monitor's windows and thresholds, as ``settings.drift`` sets them."""
    d = settings.drift
    return {
        "window_events": d.window_events,
        "interval_s": d.interval_s,
        "min_events": d.min_events,
        "alpha": d.alpha,
        "dataset_drift_share": d.dataset_drift_share,
        "performance_window": d.performance_window,
    }


def build_regression_pipeline(
    settings: Settings, bundle: Bundle, companion: Companion | None = None
) -> RegressionPipeline:
    """The pipeline of a regression bundle: its online head on the frozen backbone's
    embeddings (fine-tuning, input adaptation and model selection are the classifiers')."""
    m = bundle.manifest
    head = build_regression_head(settings, bundle)
    embed, width = build_embedder(settings, bundle)
    ledger = _ledger(settings, width, 1, np.float64)  # one output: the served value
    monitor = RegressionMonitor(
        bundle.reference,
        m.feature_names,
        bundle.reference.prediction_cuts,
        scale=_error_scale(m.source_metrics.get("source_mae")),
        **_windows(settings),
    )
    return RegressionPipeline(
        embed,
        head,
        ledger,
        monitor,
        model_name=m.name,
        model_version=m.version,
        learn_locally=settings.role == "all",
        guard=RegressionGuard(settings.guard) if settings.guard.enabled else None,
        instance=settings.delivery.instance_id,
        companion=companion,
        conformal=_calibrator(settings),
    )


def _with_inputs(settings: Settings, bundle: Bundle) -> bool:
    """Whether the head's rows carry the standardized inputs beside the embedding: a
    regression bundle's linear head, unless ``regression.with_inputs`` is off."""
    return is_regression(bundle) and settings.regression.with_inputs


def _error_scale(source_mae: object) -> float:
    """The unit of the absolute errors the detectors watch: the source MAE, or 1 where the
    bundle has none (a bundle trained without a holdout has null metrics).

    >>> _error_scale(0.9), _error_scale(None), _error_scale(float("nan"))
    (0.9, 1.0, 1.0)
    """
    if isinstance(source_mae, int | float) and math.isfinite(source_mae) and source_mae > 0:
        return float(source_mae)
    return 1.0


def build_regression_head(settings: Settings, bundle: Bundle) -> RegressionHead:
    """A regression bundle's online head, warm-started from its source head: the linear head
    on the embeddings, or with ``finetune.layers`` the top layers too, on a squared or Huber
    loss."""
    r = settings.regression
    layers = finetune_layers(settings, bundle)
    if layers != 0:
        _, top = _split(bundle, layers)
        return RegressionFinetuneHead(
            top,
            bundle.head_coef,
            bundle.head_intercept,
            loss=r.loss,
            huber_delta=r.huber_delta,
            **_optimizer(settings),
        )
    coef = np.asarray(bundle.head_coef, np.float64)[0]
    if _with_inputs(settings, bundle):  # the inputs' weights start at 0: the source model
        coef = np.concatenate([coef, np.zeros(bundle.manifest.input_dim)])
    return LinearRegressionHead(
        coef,
        float(np.asarray(bundle.head_intercept)[0]),
        solver=r.solver,
        forget=r.forget,
        prior=r.prior,
        loss=r.loss,
        huber_delta=r.huber_delta,
        lr=r.lr,
        step_size=r.step_size,
    )


def build_candidates(settings: Settings, bundle: Bundle) -> Candidates | None:
    """Input adaptation and online model selection as ``settings.adapt`` and
    ``settings.selection`` configure them; None when both are off (the pipeline as before)."""
    a, sel = settings.adapt, settings.selection
    if not a.enabled and not sel.enabled:
        return None
    pre = bundle.manifest.preprocessing
    adapter = InputAdapter(
        np.asarray(pre["mean"]),
        np.asarray(pre["std"]),
        horizon=a.horizon,
        block=a.block,
        prior=a.prior,
        source_count=int(np.asarray(bundle.reference.counts)[0].sum()),
        shrink=a.shrink,
        enabled=a.enabled,
    )
    return Candidates(adapter, len(bundle.manifest.classes), sel if sel.enabled else None)


def _calibrator(settings: Settings) -> ConformalCalibrator | None:
    """The conformal calibrator of the prediction sets, when they are on."""
    c = settings.conformal
    if not c.enabled:
        return None
    return ConformalCalibrator(c.coverage, c.window, c.gamma)
