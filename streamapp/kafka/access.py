"""Before the worker consumes anything: can it log in, and may it do what its role needs?

A wrong password or an untrusted CA makes librdkafka retry for ever, and a missing ACL
shows up as a rebalance that never assigns, or as outputs that fail one by one. The check
here turns each into one line naming what failed, at start, within seconds:

- authentication (SASL, TLS): the client's own error callback says why it cannot log in;
- authorization: the broker reports the operations this principal may perform on each topic
  and on the group (KIP-430), compared with :func:`required_access` for the role.

A transactional id without WRITE fails ``init_transactions`` at start with the same kind of
line (see :func:`authorization_error`).

>>> from streamapp.settings import Settings
>>> needs = required_access(Settings(kafka={"bootstrap_servers": "b:9092"}))
>>> sorted(needs["topics"]["predictions"]), needs["group"]
(['WRITE'], 'streamapp')
"""

from __future__ import annotations

import logging
import time
from typing import Any, TypedDict

from confluent_kafka import KafkaError, KafkaException, TopicCollection
from confluent_kafka.admin import AclOperation, AdminClient

from streamapp.errors import BrokerError
from streamapp.kafka.config import admin_config
from streamapp.settings import Settings

__all__ = ["AccessNeeds", "authorization_error", "check_access", "required_access"]

logger = logging.getLogger(__name__)

# errors that no retry mends: a login refused, a certificate not trusted
_LOGIN_FAILED = {KafkaError._AUTHENTICATION, KafkaError.SASL_AUTHENTICATION_FAILED, KafkaError._SSL}
_NOT_AUTHORIZED = {
    KafkaError.TOPIC_AUTHORIZATION_FAILED,
    KafkaError.GROUP_AUTHORIZATION_FAILED,
    KafkaError.CLUSTER_AUTHORIZATION_FAILED,
    KafkaError.TRANSACTIONAL_ID_AUTHORIZATION_FAILED,
}


class AccessNeeds(TypedDict):
    topics: dict[str, set[str]]  # topic -> operations (READ, WRITE)
    group: str  # READ on the consumer group
    transactional_id: str | None  # WRITE (exactly-once)


def required_access(settings: Settings) -> AccessNeeds:
    """The ACLs the worker needs for its role and guarantee (docs: operating, security)."""
    t = settings.topics
    topics: dict[str, set[str]] = {}

    def need(topic: str, operation: str) -> None:
        topics.setdefault(topic, set()).add(operation)

    if settings.role == "learner":
        need(t.training_examples, "READ")
        need(t.model_updates, "WRITE")
    else:
        for topic in t.inputs():
            need(topic, "READ")
        for topic in t.outputs():
            need(topic, "WRITE")
        if settings.role == "scorer":
            need(t.training_examples, "WRITE")
            need(t.model_updates, "READ")
    if settings.exactly_once:
        need(t.state, "READ")
        need(t.state, "WRITE")
    return {
        "topics": topics,
        "group": settings.kafka.group_id,
        "transactional_id": settings.transactional_id if settings.exactly_once else None,
    }


def authorization_error(error: KafkaError, doing: str) -> BrokerError | None:
    """One line for an error no retry mends (not authorized, login refused), else None."""
    if error.code() in _NOT_AUTHORIZED | _LOGIN_FAILED:
        return BrokerError(f"{doing}: {error.name()}: {error.str()}")
    return None


def check_access(settings: Settings, timeout: float = 10.0) -> None:
    """Raise :class:`~streamapp.errors.BrokerError` with one line when this worker cannot
    log in or lacks an ACL its role needs. A broker that does not report authorized
    operations (or a topic not created yet) is not judged here."""
    login_errors: list[KafkaError] = []

    def on_error(error: KafkaError) -> None:
        if error.code() in _LOGIN_FAILED:
            login_errors.append(error)

    config: dict[str, Any] = {**admin_config(settings), "error_cb": on_error}
    admin = AdminClient(config)
    try:
        _reach(admin, settings, login_errors, timeout)
        needs = required_access(settings)
        try:
            missing = _missing_on_topics(admin, needs["topics"], timeout)
            missing += _missing_on_group(admin, needs["group"], timeout)
        except KafkaException as exc:  # a broker without these requests: not judged here
            logger.debug("authorized operations not available: %s", exc)
            missing = []
    finally:
        admin.poll(0)  # hands the client's queued logs to the logger
    if missing:
        raise BrokerError(f"not authorized: {'; '.join(missing)} (see docs: operating, security)")


def _reach(
    admin: AdminClient, settings: Settings, login_errors: list[KafkaError], timeout: float
) -> None:
    """Ask for metadata a second at a time, serving the error callback in between: a refused
    login is known after one attempt, not after the whole ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            admin.list_topics(timeout=1.0)
            failure = None
        except KafkaException as exc:
            failure = exc
        admin.poll(0)  # the error callback
        if login_errors:
            raise _login_failed(settings, login_errors[0]) from failure
        if failure is None:
            return
        if time.monotonic() > deadline:
            raise BrokerError(
                f"cannot reach {settings.kafka.bootstrap_servers}: {failure}"
            ) from failure


def _login_failed(settings: Settings, error: KafkaError) -> BrokerError:
    return BrokerError(f"cannot log in to {settings.kafka.bootstrap_servers}: {error.str()}")


def _operations(described: Any) -> set[str] | None:
    operations = getattr(described, "authorized_operations", None)
    if not operations:  # not reported by this broker
        return None
    names = {op.name for op in operations if isinstance(op, AclOperation)}
    return {"READ", "WRITE", "DESCRIBE"} if "ALL" in names else names


def _missing_on_topics(admin: AdminClient, needs: dict[str, set[str]], timeout: float) -> list[str]:
    futures = admin.describe_topics(
        TopicCollection(sorted(needs)), include_authorized_operations=True, request_timeout=timeout
    )
    missing = []
    for topic, future in futures.items():
        try:
            allowed = _operations(future.result())
        except KafkaException as exc:
            code = exc.args[0].code()
            if code == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                allowed = set()  # not even DESCRIBE
            else:  # e.g. not created yet: the topic check at start says so
                continue
        if allowed is None:
            continue
        missing += [f"{op} on topic {topic}" for op in sorted(needs[topic] - allowed)]
    return missing


def _missing_on_group(admin: AdminClient, group: str, timeout: float) -> list[str]:
    [future] = admin.describe_consumer_groups(
        [group], include_authorized_operations=True, request_timeout=timeout
    ).values()
    try:
        allowed = _operations(future.result())
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.GROUP_AUTHORIZATION_FAILED:
            return []
        allowed = set()
    if allowed is None or "READ" in allowed:
        return []
    return [f"READ on group {group}"]
