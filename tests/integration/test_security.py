"""Security as users deploy it: SASL/SCRAM-SHA-512 over TLS with the standard ACL authorizer.

One Apache Kafka node with a SASL_SSL listener (a CA and a server certificate made here with
openssl), SCRAM users ``admin`` (super user) and ``worker``, and ACLs granted to ``worker``
by the test. The worker runs with exactly the ACLs :func:`required_access` names; with one of
them missing, a wrong password or a CA it does not trust it exits non-zero, within seconds,
with one line naming what failed. No secret appears in its logs, metrics or ``/readyz``.
"""

from __future__ import annotations

import shutil
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from streamapp.kafka import ensure_topics
from streamapp.kafka.access import required_access
from streamapp.kafka.apache import ApacheKafka
from streamapp.kafka.brokers import BrokerChoice
from streamapp.kafka.local_broker import free_port
from streamapp.settings import Settings
from tests.conftest import WorkerProcesses, fresh_settings, read_topic, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ADMIN_SECRET = "admin-Secret-7f3a"
WORKER_SECRET = "worker-Secret-91c2"
EVENTS = 200


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(folder: Path, name: str = "ca") -> Path:
    """A CA (``{name}.pem``) and, signed by it, a server certificate for 127.0.0.1 whose key
    and chain are in ``server.pem`` (a PEM keystore). Returns the CA's path."""
    folder.mkdir(parents=True, exist_ok=True)
    key, pem = f"{name}.key", f"{name}.pem"
    _openssl(
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "2",
        "-subj",
        f"/CN={name}",
        "-keyout",
        key,
        "-out",
        pem,
        cwd=folder,
    )
    (folder / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl(
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        cwd=folder,
    )
    _openssl(
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        f"{name}.pem",
        "-CAkey",
        f"{name}.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "san.ext",
        "-out",
        "server.crt",
        cwd=folder,
    )
    _openssl("pkcs8", "-topk8", "-nocrypt", "-in", "server.key", "-out", "server.pk8", cwd=folder)
    chain = (folder / "server.pk8").read_text() + (folder / "server.crt").read_text()
    (folder / "server.pem").write_text(chain)
    return folder / f"{name}.pem"


def client_config(ca: Path, user: str, password: str) -> dict[str, str]:
    return {
        "security.protocol": "SASL_SSL",
        "sasl.mechanisms": "SCRAM-SHA-512",
        "sasl.username": user,
        "sasl.password": password,
        "ssl.ca.location": str(ca),
    }


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ApacheKafka, Path]]:
    if shutil.which("openssl") is None:
        pytest.skip("needs openssl to make the test CA")
    folder = tmp_path_factory.mktemp("tls")
    ca = make_certificates(folder)
    jaas = (
        "org.apache.kafka.common.security.scram.ScramLoginModule required "
        f'username="admin" password="{ADMIN_SECRET}";'
    )
    kafka = ApacheKafka(
        data_dir=folder / "kafka",
        listener="SASL_SSL",
        properties={
            "sasl.enabled.mechanisms": "SCRAM-SHA-512",
            "sasl.mechanism.inter.broker.protocol": "SCRAM-SHA-512",
            "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PEM",
            "ssl.keystore.location": str(folder / "server.pem"),
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(ca),
            "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
            # the controller listener is PLAINTEXT on loopback: its principal is ANONYMOUS
            "super.users": "User:admin;User:ANONYMOUS",
            "allow.everyone.if.no.acl.found": "false",
        },
        format_args=[
            "--add-scram",
            f"SCRAM-SHA-512=[name=admin,password={ADMIN_SECRET}]",
            "--add-scram",
            f"SCRAM-SHA-512=[name=worker,password={WORKER_SECRET}]",
        ],
        client=client_config(ca, "admin", ADMIN_SECRET),
    )
    with kafka:
        yield kafka, ca


@pytest.fixture(autouse=True)
def _apache_kafka_only(broker_choice: BrokerChoice) -> None:
    if broker_choice.kind != "kafka":
        pytest.skip("SASL/SCRAM, TLS and ACLs are tested on Apache Kafka")


def worker_settings(kafka: ApacheKafka, ca: Path, bundle: Path, **overrides: object) -> Settings:
    settings = fresh_settings(
        kafka.bootstrap_servers,
        bundle,
        **{
            "delivery.instance_id": f"w-{uuid.uuid4().hex[:8]}",
            "kafka.properties": {
                "session.timeout.ms": "6000",
                **client_config(ca, "worker", WORKER_SECRET),
            },
        },
        http={"enabled": True, "host": "127.0.0.1", "port": free_port()},
        **overrides,
    )
    admin = settings.with_overrides(
        **{"kafka.properties": client_config(ca, "admin", ADMIN_SECRET)}
    )
    ensure_topics(admin, partitions=1)
    return settings


def grant(kafka: ApacheKafka, ca: Path, settings: Settings, leave_out: str = "") -> list[str]:
    """The ACLs :func:`required_access` names for ``worker``, but ``leave_out``."""
    needs = required_access(settings)
    wanted = [
        (ResourceType.TOPIC, topic, AclOperation[operation])
        for topic, operations in needs["topics"].items()
        for operation in operations
    ]
    wanted.append((ResourceType.GROUP, needs["group"], AclOperation.READ))
    if needs["transactional_id"] is not None:
        wanted.append(
            (ResourceType.TRANSACTIONAL_ID, needs["transactional_id"], AclOperation.WRITE)
        )
    granted = [w for w in wanted if f"{w[2].name} on {w[1]}" != leave_out]
    assert len(granted) == len(wanted) - bool(leave_out), f"nothing matches {leave_out!r}"
    bindings = [
        AclBinding(
            kind,
            name,
            ResourcePatternType.LITERAL,
            "User:worker",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )
        for kind, name, operation in granted
    ]
    admin = AdminClient({**client_config(ca, "admin", ADMIN_SECRET), **_bootstrap(kafka)})
    for future in admin.create_acls(bindings).values():
        future.result()
    # the broker's authorizer learns them from the metadata log: until it lists them all
    mine = AclBindingFilter(
        ResourceType.ANY,
        None,
        ResourcePatternType.ANY,
        "User:worker",
        None,
        AclOperation.ANY,
        AclPermissionType.ANY,
    )
    names = {name for _, name, _ in granted}
    wait_until(
        lambda: names <= {b.name for b in admin.describe_acls(mine).result()},
        "the ACLs never reached the authorizer",
    )
    return [f"{op.name} on {name}" for _, name, op in granted]


def _bootstrap(kafka: ApacheKafka) -> dict[str, str]:
    return {"bootstrap.servers": kafka.bootstrap_servers}


def produce_events(kafka: ApacheKafka, ca: Path, settings: Settings) -> None:
    from confluent_kafka import Producer

    producer = Producer({**client_config(ca, "admin", ADMIN_SECRET), **_bootstrap(kafka)})
    for i in range(EVENTS):
        value = f'{{"event_id": "e{i}", "features": {[float(i % 16)] * 64}}}'.encode()
        producer.produce(settings.topics.features, value, f"e{i}".encode())
    assert producer.flush(30) == 0


def assert_no_secret(*texts: str) -> None:
    for text in texts:
        assert WORKER_SECRET not in text and ADMIN_SECRET not in text


@pytest.mark.parametrize("guarantee", ["at-least-once", "exactly-once"])
def test_the_worker_runs_with_exactly_the_acls_it_documents(
    secured: tuple[ApacheKafka, Path],
    digits_bundle: Path,
    workers: WorkerProcesses,
    guarantee: str,
) -> None:
    kafka, ca = secured
    settings = worker_settings(kafka, ca, digits_bundle, processing_guarantee=guarantee)
    grant(kafka, ca, settings)
    produce_events(kafka, ca, settings)
    process = workers.start(settings)
    admin_view = settings.with_overrides(
        **{"kafka.properties": client_config(ca, "admin", ADMIN_SECRET)}
    )
    predictions = read_topic(admin_view, settings.topics.predictions, expected=EVENTS, timeout=90)
    assert {doc["event_id"] for _, doc in predictions} == {f"e{i}" for i in range(EVENTS)}
    port = settings.http.port
    pages = [
        urllib.request.urlopen(f"http://127.0.0.1:{port}/{page}", timeout=5).read().decode()
        for page in ("metrics", "readyz")
    ]
    process.terminate()
    assert process.wait(timeout=60) == 0
    assert_no_secret(workers.log(), *pages)


def _one_line_exit(workers: WorkerProcesses, settings: Settings) -> str:
    """Start a worker that must fail: its exit code and the one ERROR line it wrote."""
    process = workers.start(settings)
    assert process.wait(timeout=60) != 0
    log = workers.log()
    assert "Traceback" not in log
    # the worker's own lines (librdkafka's log of the same failure may precede it)
    errors = [
        line
        for line in log.splitlines()
        if (" ERROR " in line or " CRITICAL " in line) and "librdkafka" not in line
    ]
    assert len(errors) == 1, log[-3000:]
    assert_no_secret(log)
    return errors[0]


@pytest.mark.parametrize(
    ("guarantee", "missing"),
    [
        ("at-least-once", "WRITE on predictions"),
        ("at-least-once", "READ on group"),
        ("exactly-once", "WRITE on transactional-id"),
    ],
)
def test_a_missing_acl_ends_the_worker_with_one_line_naming_it(
    secured: tuple[ApacheKafka, Path],
    digits_bundle: Path,
    workers: WorkerProcesses,
    guarantee: str,
    missing: str,
) -> None:
    kafka, ca = secured
    settings = worker_settings(kafka, ca, digits_bundle, processing_guarantee=guarantee)
    operation, _, what = missing.partition(" on ")
    name = {
        "predictions": settings.topics.predictions,
        "group": settings.kafka.group_id,
        "transactional-id": settings.transactional_id,
    }[what]
    grant(kafka, ca, settings, leave_out=f"{operation} on {name}")
    began = time.monotonic()
    line = _one_line_exit(workers, settings)
    assert name in line
    assert "AUTHORIZATION" in line.upper() or "not authorized" in line
    print(f"exited after {time.monotonic() - began:.1f} s: {line}")


@pytest.mark.parametrize("fault", ["wrong password", "untrusted CA"])
def test_a_refused_login_ends_the_worker_with_one_line(
    secured: tuple[ApacheKafka, Path],
    digits_bundle: Path,
    workers: WorkerProcesses,
    tmp_path: Path,
    fault: str,
) -> None:
    kafka, ca = secured
    settings = worker_settings(kafka, ca, digits_bundle)
    grant(kafka, ca, settings)
    if fault == "wrong password":
        client = client_config(ca, "worker", "not-" + WORKER_SECRET)
    else:
        client = client_config(
            make_certificates(tmp_path / "other", "other-ca"), "worker", WORKER_SECRET
        )
    line = _one_line_exit(
        workers,
        settings.with_overrides(**{"kafka.properties": {"session.timeout.ms": "6000", **client}}),
    )
    assert "cannot log in" in line
    assert ("uthentication" in line) if fault == "wrong password" else ("certificate" in line)
