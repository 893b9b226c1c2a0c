"""Typed configuration, resolved once. The only module that reads environment variables.

Settings come in groups: ``kafka`` (how clients reach the cluster), ``delivery`` (the
guarantee and its checkpoints), ``model`` (what is served, on what), ``input`` (what an input
may be), then ``topics``, ``batch``, ``ledger``, ``drift``, ``head``, ``finetune``, ``guard``,
``http``, ``learner`` and ``challenger``. Every field can be set as ``STREAMAPP_<GROUP>__<FIELD>``
(e.g. ``STREAMAPP_KAFKA__BOOTSTRAP_SERVERS``); CLI flags override the environment. Settings
that moved into a group keep working under their old names (:data:`RENAMED`), with a warning.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from streamapp.errors import ConfigError

__all__ = [
    "RENAMED",
    "AdaptSettings",
    "BatchSettings",
    "ChallengerSettings",
    "ConformalSettings",
    "DeliverySettings",
    "DriftSettings",
    "FinetuneSettings",
    "GuardSettings",
    "HeadSettings",
    "HttpSettings",
    "InputSettings",
    "KafkaSettings",
    "LearnerSettings",
    "LedgerSettings",
    "ModelSettings",
    "RegressionSettings",
    "SchemaRegistrySettings",
    "SelectionSettings",
    "Settings",
    "TopicNames",
]

logger = logging.getLogger(__name__)

_FROZEN = ConfigDict(frozen=True, extra="forbid")


class TopicNames(BaseModel):
    """Names of the topics the worker reads and writes."""

    model_config = _FROZEN

    features: str = Field("features", description="input: feature events to score")
    feedback: str = Field(
        "feedback", description="input: delayed labels, co-partitioned with features"
    )
    predictions: str = Field("predictions", description="output: one prediction per event")
    drift: str = Field("drift", description="output: drift reports")
    dead_letter: str = Field(
        "dead-letter", description="output: inputs that could not be processed, with the reason"
    )
    state: str = Field(
        "streamapp-state",
        description="compacted: learning-state snapshots and drift cursors (exactly-once)",
    )
    model_control: str = Field(
        "model-control", description="lifecycle events: promote, rollback, loaded, refused"
    )
    training_examples: str = Field(
        "training-examples", description="scale-out: joined examples from scorers to the learner"
    )
    model_updates: str = Field(
        "model-updates", description="scale-out, compacted: head snapshots from the learner"
    )
    shadow_predictions: str = Field(
        "shadow-predictions", description="a challenger's predictions (champion/challenger)"
    )

    def inputs(self) -> list[str]:
        return [self.features, self.feedback]

    def outputs(self) -> list[str]:
        return [self.predictions, self.drift, self.dead_letter]


class BatchSettings(BaseModel):
    """Adaptive micro-batching: a batch is what has arrived, up to ``max_size`` (see
    :mod:`streamapp.batching`)."""

    model_config = _FROZEN

    max_size: int = Field(500, ge=1, le=100_000, description="a batch never holds more")
    max_wait_ms: int = Field(
        0,
        ge=0,
        le=60_000,
        description="how long a batch that holds something waits for more (0: take what "
        "has arrived; batches still grow under load)",
    )
    idle_wait_ms: int = Field(
        100,
        ge=1,
        le=60_000,
        description="how long an idle loop waits for a message before it ticks (commits, timers)",
    )
    align_max_idle_ms: int = Field(
        1000,
        ge=0,
        description="how long an input partition with nothing fetched may hold "
        "back the others' event-time order (it never does once it reached its end, unless "
        "align_strict)",
    )
    align_strict: bool = Field(
        False,
        description="an empty partition holds the others back even at its end, until it "
        "delivers or has been quiet for align_max_idle_ms: the event-time order, and so the "
        "learning, then survive a partition leader's failover (a partition whose leader died "
        "looks caught up), at up to align_max_idle_ms of latency on a quiet partition",
    )


class LedgerSettings(BaseModel):
    """The pending ledger of served embeddings waiting for their labels."""

    model_config = _FROZEN

    max_entries: int = Field(
        100_000, ge=1, description="served rows waiting for a label; beyond, the oldest are evicted"
    )
    ttl_s: float = Field(3600.0, gt=0, description="labels later than this (event time) are late")
    early_label_ttl_s: float = Field(
        60.0, ge=0, description="how long a label that beat its event waits for it"
    )
    max_parked: int = Field(
        10_000, ge=0, description="labels waiting for their event; beyond, the oldest are orphans"
    )


class DriftSettings(BaseModel):
    """Drift reports: every ``window_events`` scored events or ``interval_s`` seconds."""

    model_config = _FROZEN

    window_events: int = Field(1000, ge=10, description="scored events per drift report")
    interval_s: float = Field(
        30.0, gt=0, description="seconds per drift report (with at least min_events events)"
    )
    min_events: int = Field(50, ge=1, description="a timed report needs at least this many events")
    alpha: float = Field(0.01, gt=0, lt=1, description="per-feature false-alarm rate")
    dataset_drift_share: float = Field(
        0.25, gt=0, le=1, description="share of drifted features that flags the dataset"
    )
    performance_window: int = Field(1000, ge=10, description="labels in the rolling metrics")


class HeadSettings(BaseModel):
    """The online head: scikit-learn ``SGDClassifier(loss="log_loss")`` hyperparameters."""

    model_config = _FROZEN

    kind: Literal["sgd", "river"] = Field(
        "sgd", description="sgd: scikit-learn SGDClassifier; river: river LogisticRegression"
    )
    learning_rate: Literal["constant", "invscaling", "adaptive", "optimal"] = Field(
        "constant", description="SGD learning-rate schedule (head-only learning)"
    )
    eta0: float = Field(0.003, gt=0, description="SGD initial learning rate")
    alpha: float = Field(1e-4, ge=0, description="SGD L2 regularization strength")
    seed: int = Field(0, description="SGD random seed (updates are deterministic)")


class FinetuneSettings(BaseModel):
    """Which backbone layers learn online, and how (``layers=0``: the head only)."""

    model_config = _FROZEN

    layers: Annotated[int, Field(ge=0)] | Literal["all", "auto"] = Field(
        "auto",
        description='top backbone layers trained with the head: 0 = head only, k, "all"; '
        '"auto" = where the backbone can be fine-tuned (torch, flat inputs), the top layers '
        "within 65,536 weights (all of a small backbone, the head only of a large one), "
        "else head only",
    )
    optimizer: Literal["sgd", "adam"] = Field("adam", description="the torch optimizer")
    lr: float = Field(1e-2, gt=0, description="learning rate of the torch optimizer")
    weight_decay: float = Field(0.0, ge=0, description="the optimizer's weight decay")
    momentum: float = Field(0.0, ge=0, lt=1, description="sgd only")
    step_size: int = Field(
        50, ge=1, description="joined labels per optimizer step (steps are batch-invariant)"
    )

    @property
    def enabled(self) -> bool:
        return self.layers != 0


class GuardSettings(BaseModel):
    """The safe-adaptation guard (McNemar on a rolling window of paired labels)."""

    model_config = _FROZEN

    enabled: bool = Field(
        True, description="serve the frozen source model while the adapted one is worse"
    )
    window: int = Field(500, ge=10, description="paired labels in the rolling comparison")
    min_labels: int = Field(100, ge=1, description="paired labels before the first decision")
    alpha: float = Field(0.01, gt=0, lt=1, description="significance of a fallback")
    good_every: int = Field(1000, ge=1, description="labels between last-good snapshots")


class ConformalSettings(BaseModel):
    """Online conformal prediction sets (adaptive conformal inference, streamapp.conformal)."""

    model_config = _FROZEN

    enabled: bool = Field(True, description="give every prediction a calibrated prediction set")
    coverage: float = Field(
        0.9, gt=0, lt=1, description="target share of labels inside their prediction set"
    )
    window: int = Field(500, ge=10, description="recent labels the score quantile is taken over")
    gamma: float = Field(
        0.005, gt=0, le=1, description="ACI step: how fast the level reacts to misses"
    )


class RegressionSettings(BaseModel):
    """The online head of a regression bundle (streamapp.regression.head)."""

    model_config = _FROZEN

    solver: Literal["ridge", "sgd"] = Field(
        "ridge",
        description="ridge: recursive ridge anchored at the source head; sgd: normalized steps",
    )
    forget: float = Field(
        0.999, gt=0, le=1, description="ridge: per-label forgetting (memory 1/(1-forget) labels)"
    )
    prior: float = Field(10.0, gt=0, description="ridge: pull towards the source head")
    loss: Literal["squared", "huber"] = Field(
        "squared", description="sgd and fine-tuning (finetune.layers > 0): the loss"
    )
    huber_delta: float = Field(1.0, gt=0, description="sgd: Huber's quadratic zone")
    lr: float = Field(0.5, gt=0, lt=2, description="sgd: normalized step size")
    step_size: int = Field(50, ge=1, description="labels per learning step (batch-invariant)")
    with_inputs: bool = Field(
        True, description="the head also sees the standardized inputs beside the embedding"
    )


class AdaptSettings(BaseModel):
    """Label-free input adaptation: re-estimate the input standardization on the target
    stream (see :mod:`streamapp.model.adapt`)."""

    model_config = _FROZEN

    enabled: bool = Field(True, description="re-standardize the inputs on the target stream")
    horizon: int = Field(2000, ge=1, description="events the moving statistics average over")
    block: int = Field(50, ge=1, description="events per statistics update (any batching)")
    prior: float = Field(50.0, ge=0, description="pseudo-count of the source statistics")
    shrink: float = Field(
        64.0, ge=0, description="evidence a change needs (0: follow the estimate in full)"
    )


class SelectionSettings(BaseModel):
    """Online model selection among the frozen source, the adapted transfer model and a
    from-scratch linear model (see :mod:`streamapp.selection`)."""

    model_config = _FROZEN

    enabled: bool = Field(True, description="serve the candidate with the best recent accuracy")
    scratch: bool = Field(True, description="keep the from-scratch linear candidate")
    window: int = Field(500, ge=10, description="labels in the rolling comparison")
    min_labels: int = Field(50, ge=1, description="labels before the first switch")
    check_every: int = Field(50, ge=1, description="labels between decisions (any batching)")
    hold: int = Field(100, ge=0, description="labels after a switch before the next one")
    alpha: float = Field(0.05, gt=0, lt=1, description="significance of a switch (McNemar)")
    learning_rate: float = Field(0.2, gt=0, description="the scratch candidate's SGD step")
    step: int = Field(8, ge=1, description="labels per SGD step of the scratch candidate")


class ChallengerSettings(BaseModel):
    """A challenger that scores every event in shadow and learns from the same labels."""

    model_config = _FROZEN

    enabled: bool = Field(False, description="run a challenger in shadow")
    bundle: Path | None = Field(None, description="its bundle (default: the served one)")
    head: HeadSettings | None = Field(None, description="its head (default: the champion's)")
    finetune: FinetuneSettings | None = Field(
        None, description="its fine-tuning (default: the champion's)"
    )
    alpha: float = Field(0.01, gt=0, lt=1, description="significance level of McNemar's test")
    auto_promote: bool = Field(False, description="promote it in the registry when it wins")
    min_labels: int = Field(1000, ge=1, description="labels before auto-promotion is considered")
    margin: float = Field(0.02, ge=0, description="accuracy gain auto-promotion needs")


class HttpSettings(BaseModel):
    """The worker's metrics and health endpoints (see :mod:`streamapp.ops.server`)."""

    model_config = _FROZEN

    enabled: bool = Field(True, description="serve /metrics, /healthz and /readyz")
    host: str = Field("0.0.0.0", description="the address the endpoints listen on")
    port: int = Field(9400, ge=0, le=65535, description="0 picks a free port")
    stall_s: float = Field(
        60.0,
        gt=0,
        description="/healthz fails when the poll loop has not ticked, or had work and "
        "committed nothing, for this long",
    )


class LearnerSettings(BaseModel):
    """The learner role: how often it publishes head snapshots to ``model-updates``."""

    model_config = _FROZEN

    publish_every_examples: int = Field(
        1000, ge=1, description="publish a head snapshot after this many examples"
    )
    publish_interval_s: float = Field(2.0, gt=0, description="... or after this many seconds")


class KafkaSettings(BaseModel):
    """How every client reaches Kafka, and the consumer group the worker joins."""

    model_config = _FROZEN

    bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers; unset means the embedded broker (demo)"
    )
    properties: dict[str, str] = Field(
        default_factory=dict,
        repr=False,  # it carries secrets (sasl.password, ssl.key.password): never printed
        description="librdkafka properties for every client, e.g. security.protocol, sasl.*; "
        "consumer-only and producer-only keys go only to those clients (CLI: -X key=value)",
    )
    group_id: str = Field("streamapp", description="the consumer group")
    client_id: str = Field("streamapp", description="the Kafka client id")
    static_membership: bool | None = Field(
        None,
        description="join the group as static member delivery.instance_id (KIP-345); default: "
        "on in exactly-once mode, so a restarted instance gets its partitions back at once",
    )
    max_poll_interval_ms: int = Field(
        300_000, ge=1000, description="the consumer's max.poll.interval.ms"
    )

    @model_validator(mode="before")
    @classmethod
    def _librdkafka_keys_are_properties(cls, value: Any) -> Any:
        # the old STREAMAPP_KAFKA held librdkafka properties themselves: keys that are not
        # fields of this group are those
        if isinstance(value, dict) and not value.keys() <= cls.model_fields.keys():
            fields = {k: v for k, v in value.items() if k in cls.model_fields}
            loose = {k: v for k, v in value.items() if k not in cls.model_fields}
            return {**fields, "properties": {**fields.get("properties", {}), **loose}}
        return value

    @field_validator("properties", mode="before")
    @classmethod
    def _stringify(cls, value: Any) -> Any:
        # librdkafka wants strings; env JSON may carry numbers or booleans
        if isinstance(value, dict):
            return {
                str(k): str(v).lower() if isinstance(v, bool) else str(v) for k, v in value.items()
            }
        return value


class DeliverySettings(BaseModel):
    """The delivery guarantee and its checkpoints (see :mod:`streamapp.checkpointing`)."""

    model_config = _FROZEN

    processing_guarantee: Literal["at-least-once", "exactly-once"] = Field(
        "at-least-once",
        description="exactly-once: outputs, input offsets and learning-state snapshots in one "
        "Kafka transaction",
    )
    instance_id: str = Field(
        default_factory=socket.gethostname,
        description="stable id of this worker: its transactional.id and state key (exactly-once)",
    )
    commit_interval_ms: int = Field(
        1000, ge=0, description="checkpoint interval: flush + offset commit, or a transaction"
    )
    snapshot_interval_s: float = Field(
        30.0, gt=0, description="learning-state snapshot interval (exactly-once)"
    )
    transaction_timeout_ms: int = Field(
        60_000, ge=1000, description="the producer's transaction.timeout.ms (exactly-once)"
    )
    broker_outage_limit_s: float = Field(
        300.0,
        gt=0,
        description="how long commits may fail for want of a broker before the worker exits "
        "(code 2, one line); shorter outages are ridden through, offsets held and retried",
    )


class ModelSettings(BaseModel):
    """Which model is served, and how its backbone runs."""

    model_config = _FROZEN

    bundle: Path = Field(Path("models/digits-shift/1"), description="model bundle directory")
    registry: Path | None = Field(
        None, description="model registry root; with name, the bundle comes from there"
    )
    name: str | None = Field(None, description="the registered model to serve")
    alias: str = Field("production", description="the alias (or version) to serve")
    device: Literal["cpu", "cuda"] = Field(
        "cpu", description="cuda: the backbone on the GPU, one pinned host-to-device copy a batch"
    )
    variant: Literal["torch", "int8", "onnx"] = Field(
        "torch",
        description="how the backbone runs: torch (float64 on CPU, exact replays), int8 "
        "(dynamic quantization), onnx (onnxruntime; needs `streamapp models export`)",
    )
    half: bool = Field(False, description="float16 backbone on CUDA")
    torch_threads: int = Field(
        0,
        ge=0,
        description="torch intra-op and numpy BLAS threads; 0 (auto): by what the backbone "
        "costs, one per 500k FLOPs per row, at least 1, at most the cores but one (1 for the "
        "demo MLP: more threads spin against the broker client's threads for the cores)",
    )


class InputSettings(BaseModel):
    """What an input may be before it is dead-lettered, and what a dead letter keeps."""

    model_config = _FROZEN

    max_payload_bytes: int = Field(262_144, ge=64, description="larger inputs are dead-lettered")
    max_abs_value: float = Field(
        1e6,
        gt=0,
        le=3.4e38,  # the backbone sees float32: a larger value would become infinity
        description="larger feature values are dead-lettered (at most 3.4e38, float32's range)",
    )
    max_abs_target: float = Field(
        1e12,
        gt=0,
        description="regression targets of larger magnitude are dead-lettered (value_range)",
    )
    max_future_skew_s: float = Field(
        300.0,
        gt=0,
        description="an event or label whose ts is further ahead of its Kafka timestamp is "
        "dead-lettered (ts_out_of_range), so one bad clock cannot freeze stream time",
    )
    missing: Literal["dead-letter", "impute"] = Field(
        "dead-letter",
        description="a null or absent feature: dead-letter the event (reason missing) or "
        "impute the source mean (counted per feature in drift reports and metrics)",
    )
    dead_letter_payload_bytes: int = Field(
        65_536,
        ge=0,
        description="a dead letter keeps at most this many bytes of its payload (with the "
        "original size and sha256), so it always fits the producer's message limit",
    )


WireFormat = Literal["json", "avro", "json-schema", "protobuf"]


class SchemaRegistrySettings(BaseModel):
    """Topics in the Confluent wire format (magic byte 0, a 4-byte schema id, the payload),
    their schemas in a Confluent-compatible Schema Registry (see
    :mod:`streamapp.codec.registry`). The field mapping is stated here once and checked at
    start against each input topic's latest registered schema."""

    # a refused url may hold a secret: its errors do not echo the input
    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    url: str | None = Field(
        None, description="the registry's Confluent-compatible API, e.g. http://registry:8081"
    )
    basic_auth_user_info: str | None = Field(
        None,
        repr=False,  # a secret: never printed, logged or shown by /readyz
        description="user:password for the registry (basic.auth.user.info)",
    )
    ca_location: str | None = Field(
        None, description="the CA bundle that signs the registry's TLS certificate"
    )
    features_format: WireFormat = Field(
        "json",
        description="how feature events are written: json (streamapp's own) or a registry format",
    )
    feedback_format: WireFormat = Field("json", description="how labels are written")
    output_format: Literal["json", "avro"] = Field(
        "json",
        description="predictions, drift reports and dead letters: json, or avro (the Avro "
        "twins in schemas/, registered under the topic-name strategy at start)",
    )
    event_id_field: str = Field("event_id", description="the record field holding event_id")
    ts_field: str = Field("ts", description="the record field holding ts (optional field)")
    label_field: str = Field("label", description="the feedback record field holding the label")
    features_field: str | None = Field(
        None,
        description="one array field holding all features in the bundle's order; unset: one "
        "named numeric field per feature",
    )
    feature_fields: dict[str, str] = Field(
        default_factory=dict,
        description="bundle feature name -> record field, where they differ (named fields)",
    )
    outage_limit_s: float = Field(
        300.0,
        gt=0,
        description="a registry unreachable this long stops the worker; shorter outages "
        "are ridden out holding the input position",
    )

    @field_validator("url")
    @classmethod
    def _no_credentials_in_url(cls, value: str | None) -> str | None:
        # a URL is logged and shown where a secret must not be: credentials go apart; the
        # client takes a comma-separated list of urls (fail-over), so each one is checked
        for url in (value or "").split(","):
            if "@" in url.split("://", 1)[-1].split("/", 1)[0]:
                raise ValueError("put the credentials in basic_auth_user_info, not in the url")
        return value

    @property
    def client_config(self) -> dict[str, str]:
        """What ``confluent_kafka.schema_registry.SchemaRegistryClient`` takes."""
        assert self.url is not None
        config = {"url": self.url}
        if self.basic_auth_user_info:
            config["basic.auth.user.info"] = self.basic_auth_user_info
        if self.ca_location:
            config["ssl.ca.location"] = self.ca_location
        return config

    @property
    def in_use(self) -> bool:
        """Whether any topic is read or written in a registry format."""
        formats = (self.features_format, self.feedback_format, self.output_format)
        return any(f != "json" for f in formats)

    def require_json(self, runtime: str) -> None:
        """One line, before anything starts, for a runtime that speaks JSON only."""
        if self.in_use:
            raise ConfigError(
                f"the {runtime} runtime reads and writes JSON only; the Schema Registry formats "
                "need the default runtime (--runtime confluent)"
            )


# Settings that moved into a group (or were renamed) since 0.1: the old names, as keyword
# arguments, dotted overrides or STREAMAPP_* variables, still work, with a warning.
RENAMED: dict[str, str] = {
    "bootstrap_servers": "kafka.bootstrap_servers",
    "group_id": "kafka.group_id",
    "client_id": "kafka.client_id",
    "static_membership": "kafka.static_membership",
    "max_poll_interval_ms": "kafka.max_poll_interval_ms",
    "processing_guarantee": "delivery.processing_guarantee",
    "instance_id": "delivery.instance_id",
    "commit_interval_ms": "delivery.commit_interval_ms",
    "snapshot_interval_s": "delivery.snapshot_interval_s",
    "transaction_timeout_ms": "delivery.transaction_timeout_ms",
    "broker_outage_limit_s": "delivery.broker_outage_limit_s",
    "bundle": "model.bundle",
    "registry": "model.registry",
    "model_name": "model.name",
    "model_alias": "model.alias",
    "device": "model.device",
    "variant": "model.variant",
    "half": "model.half",
    "torch_threads": "model.torch_threads",
    "max_payload_bytes": "input.max_payload_bytes",
    "max_abs_value": "input.max_abs_value",
    "max_future_skew_s": "input.max_future_skew_s",
    "missing": "input.missing",
    "dead_letter_payload_bytes": "input.dead_letter_payload_bytes",
    "learner.snapshot_every_examples": "learner.publish_every_examples",
    "learner.snapshot_interval_s": "learner.publish_interval_s",
}


_KAFKA_FIELDS = set(KafkaSettings.model_fields)


def _env_name(dotted: str) -> str:
    return "STREAMAPP_" + dotted.upper().replace(".", "__")


def _move_renamed(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the settings given under an old name moved to the new one (the groups
    on the way are copied: the caller's dicts are left as they were)."""
    for old, new in RENAMED.items():
        *old_parents, old_leaf = old.split(".")
        node: dict[str, Any] | None = data
        for part in old_parents:
            child = node.get(part) if node is not None else None
            if node is None or not isinstance(child, dict):
                node = None
                break
            node[part] = dict(child)
            node = node[part]
        if node is None or old_leaf not in node:
            continue
        value = node.pop(old_leaf)
        logger.warning(
            "setting %r is now %r (%s): the old name still works", old, new, _env_name(new)
        )
        *parents, leaf = new.split(".")
        target = data
        for part in parents:
            target[part] = _as_dict(target.get(part))
            target = target[part]
        target[leaf] = value
    return data


def _as_dict(group: Any) -> dict[str, Any]:
    """A group given as a model or a mapping, as a new dict (empty when not given)."""
    if isinstance(group, BaseModel):
        return group.model_dump()
    return dict(group) if isinstance(group, dict) else {}


class _RenamedEnv(PydanticBaseSettingsSource):
    """``STREAMAPP_*`` variables under a setting's old name (below the new names: a variable
    under the new name wins)."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # the whole mapping comes from __call__

    def __call__(self) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for old, new in RENAMED.items():
            value = os.environ.get(_env_name(old))
            if value is None or _env_name(new) in os.environ:
                continue
            *parents, leaf = old.split(".")
            node = data
            for part in parents:
                node = node.setdefault(part, {})
            node[leaf] = value
        return data


class Settings(BaseSettings):
    """All of streamapp's configuration."""

    # hide_input_in_errors: a refused value may be a secret (a registry url with credentials)
    model_config = SettingsConfigDict(
        env_prefix="STREAMAPP_",
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        hide_input_in_errors=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    delivery: DeliverySettings = DeliverySettings()
    model: ModelSettings = ModelSettings()
    input: InputSettings = InputSettings()
    topics: TopicNames = TopicNames()
    batch: BatchSettings = BatchSettings()
    ledger: LedgerSettings = LedgerSettings()
    drift: DriftSettings = DriftSettings()
    head: HeadSettings = HeadSettings()
    finetune: FinetuneSettings = FinetuneSettings()
    guard: GuardSettings = GuardSettings()
    adapt: AdaptSettings = AdaptSettings()
    selection: SelectionSettings = SelectionSettings()
    http: HttpSettings = HttpSettings()
    learner: LearnerSettings = LearnerSettings()
    challenger: ChallengerSettings = ChallengerSettings()
    conformal: ConformalSettings = ConformalSettings()
    regression: RegressionSettings = RegressionSettings()
    schema_registry: SchemaRegistrySettings = SchemaRegistrySettings()
    role: Literal["all", "scorer", "learner"] = Field(
        "all",
        description="all: one process; scorer: score, join, publish training examples and "
        "follow model-updates; learner: learn from training examples, publish head snapshots",
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text (key=value context) or one JSON object per line"
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            _RenamedEnv(settings_cls),
            dotenv_settings,
            file_secret_settings,
        )

    @model_validator(mode="before")
    @classmethod
    def _accept_old_names(cls, value: Any) -> Any:
        return _move_renamed(dict(value)) if isinstance(value, dict) else value

    @property
    def exactly_once(self) -> bool:
        return self.delivery.processing_guarantee == "exactly-once"

    @property
    def group_instance_id(self) -> str | None:
        static = self.kafka.static_membership
        if static is None:
            static = self.exactly_once
        return self.delivery.instance_id if static else None

    @property
    def transactional_id(self) -> str:
        return f"{self.kafka.group_id}.{self.delivery.instance_id}"

    def as_env(self) -> dict[str, str]:
        """These settings as ``STREAMAPP_*`` variables (for a worker subprocess)."""
        env = {}
        for name, value in self.model_dump(mode="json").items():
            if value is None:
                continue
            if isinstance(value, dict):
                for sub, sub_value in value.items():
                    if sub_value is None:
                        continue
                    text = json.dumps(sub_value) if isinstance(sub_value, dict) else str(sub_value)
                    env[f"STREAMAPP_{name.upper()}__{sub.upper()}"] = text
            else:
                env[f"STREAMAPP_{name.upper()}"] = str(value)
        return env

    def subprocess_env(self) -> dict[str, str]:
        """This process's environment with these settings as the only ``STREAMAPP_*``
        variables: what a worker subprocess (or ``exec``) is started with."""
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("STREAMAPP_")}
        return {**inherited, **self.as_env()}

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with the non-``None`` values of ``changes`` applied (dotted keys reach nested)."""
        data = self.model_dump()
        for dotted, value in changes.items():
            if value is None:
                continue
            # an old name is moved by validation (_accept_old_names), as everywhere else
            path = dotted
            if path == "kafka" and isinstance(value, dict) and not value.keys() <= _KAFKA_FIELDS:
                path = "kafka.properties"  # the old form: librdkafka properties themselves
            *parents, leaf = path.split(".")
            node = data
            for part in parents:
                node = node[part]
            node[leaf] = value
        return Settings.model_validate(data)
