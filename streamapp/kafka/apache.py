"""Apache Kafka itself, for the tests and the benchmarks: jars from Maven Central, KRaft mode.

The runtime jars (``runtime/pom.xml`` beside this module pins the version) are resolved
once with Maven into a cache folder. Each node is one combined broker + controller JVM on
free loopback ports, formatted with ``kafka.tools.StorageTool`` and stopped by its own PID.
One node serves the test suite; three make the cluster of the leader-loss tests. Settings
suit a test machine: internal topics of one partition, no initial rebalance delay, short
minimum session timeouts (both group protocols), small heaps.

>>> KAFKA_VERSION
'4.1.1'
"""

from __future__ import annotations

import base64
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from streamapp.errors import BrokerError
from streamapp.kafka.local_broker import OwnedBroker, free_port

__all__ = [
    "KAFKA_VERSION",
    "POM",
    "ApacheKafka",
    "java_missing",
    "resolve_runtime",
]

logger = logging.getLogger(__name__)

POM = Path(__file__).with_name("runtime") / "pom.xml"
KAFKA_VERSION = "4.1.1"  # the pom's kafka.version; docker-compose.yml runs the same image tag
DEFAULT_HOME = Path(".streamapp") / "apache-kafka"

_LOG4J = """\
status = warn
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = {log}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = WARN
rootLogger.appenderRef.file.ref = FILE
logger.server.name = kafka.server.KafkaRaftServer
logger.server.level = INFO
"""


def java_missing() -> str | None:
    """Why Apache Kafka cannot start here (no Java 17+), or None; whether its jars can be had
    is :func:`streamapp.kafka.brokers.choose_broker`'s question."""
    java = _java()
    if java is None:
        return "no java on PATH (nor JAVA_HOME)"
    done = subprocess.run([java, "-version"], capture_output=True, text=True, check=False)
    version = _java_major(done.stderr + done.stdout)
    if version is None or version < 17:
        return f"Apache Kafka {KAFKA_VERSION} needs Java 17+, {java} is {version or 'unknown'}"
    return None


def _java_major(banner: str) -> int | None:
    """The major version in ``java -version``'s banner.

    >>> _java_major('openjdk version "17.0.15" 2025-04-15'), _java_major('java version "1.8.0_1"')
    (17, 8)
    """
    match = re.search(r'version "(\d+)(?:\.(\d+))?', banner)
    if match is None:
        return None
    major = int(match.group(1))
    return int(match.group(2) or 0) if major == 1 else major


def _java() -> str | None:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def resolve_runtime(home: Path = DEFAULT_HOME, version: str = KAFKA_VERSION) -> Path:
    """The folder of the broker's runtime jars, resolved with Maven the first time.

    A finished resolution leaves a ``.complete`` stamp, so an interrupted one is redone.
    """
    home = home.resolve()  # absolute: Maven resolves relative paths from the pom's folder
    lib = home / version / "lib"
    if (lib / ".complete").exists():
        return lib
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"Apache Kafka {version} jars are not in {lib} and there is no mvn")
    staging = Path(tempfile.mkdtemp(prefix="kafka-lib-", dir=_mkdir(home)))
    logger.info("resolving Apache Kafka %s from Maven Central into %s", version, lib)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(POM),
        f"-Dkafka.version={version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={staging}",
        "-DincludeScope=runtime",
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not any(staging.glob(f"kafka_2.13-{version}.jar")):
        shutil.rmtree(staging, ignore_errors=True)
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise BrokerError(f"could not resolve Apache Kafka {version}: {' | '.join(tail)}")
    (staging / ".complete").touch()
    shutil.rmtree(lib, ignore_errors=True)
    _mkdir(lib.parent)
    staging.rename(lib)
    return lib


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class _Node:
    node_id: int
    port: int
    controller_port: int
    data: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def log(self) -> Path:
        return self.data / "server.log"

    def log_tail(self, chars: int = 800) -> str:
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


class ApacheKafka(OwnedBroker):
    """``with ApacheKafka() as kafka: kafka.bootstrap_servers``: a KRaft cluster on loopback.

    Parameters
    ----------
    data_dir
        Where each node keeps its log (``node-1/``, ...); a temporary folder (removed on
        close) if ``None``. A node restarted by :meth:`start_node` keeps its data and port.
    nodes
        The number of combined broker + controller nodes. With 3, internal topics get
        replication factor 3 and ``min.insync.replicas=2``.
    properties
        Broker properties that win over the defaults (e.g. listeners for SASL/TLS).
    format_args
        Extra ``StorageTool format`` arguments (e.g. ``--add-scram`` for SCRAM users).
    listener
        The security protocol of the client (and inter-broker) listener, e.g. ``SASL_SSL``;
        its SASL and TLS settings come in ``properties``.
    client
        librdkafka settings for the helper's own readiness check on such a listener (e.g. a
        super user's SASL credentials and the CA).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        nodes: int = 1,
        properties: Mapping[str, str] | None = None,
        format_args: Sequence[str] = (),
        listener: str = "PLAINTEXT",
        client: Mapping[str, str] | None = None,
        home: Path = DEFAULT_HOME,
        version: str = KAFKA_VERSION,
        heap_mb: int = 512,
        start_timeout: float = 120.0,
    ) -> None:
        self.data_dir = data_dir
        self.nodes = nodes
        self.properties = dict(properties or {})
        self.format_args = tuple(format_args)
        self.listener = listener
        self.client = dict(client or {})
        self.home = home
        self.version = version
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self._own_dir = False
        self._nodes: list[_Node] = []
        self._lib: Path | None = None

    # -- addresses -------------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        return ",".join(f"127.0.0.1:{node.port}" for node in self._nodes)

    @property
    def name(self) -> str:
        return f"Apache Kafka {self.version}"

    @property
    def pid(self) -> int | None:
        return self.pids[0] if self.pids else None

    @property
    def pids(self) -> list[int]:
        return [node.process.pid for node in self._nodes if node.process is not None]

    def port(self, node_id: int) -> int:
        return self._node(node_id).port

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> ApacheKafka:
        """Start every node that is not running (formatting new ones) and wait until the
        cluster serves: all its brokers registered and answering metadata requests."""
        try:
            if not self._nodes:
                self._create()
            for node in self._nodes:
                if node.process is None:
                    self._launch(node)
            self._wait_serving()
        except BaseException:  # no JVM left behind (they run in sessions of their own)
            self.close()
            raise
        logger.info("%s on %s (pids %s)", self.name, self.bootstrap_servers, self.pids)
        return self

    def start_node(self, node_id: int) -> None:
        """Restart one stopped node on its port and data, and wait until the cluster serves."""
        node = self._node(node_id)
        if node.process is None:
            self._launch(node)
        self._wait_serving()

    def stop(self, kill: bool = False) -> None:
        """Stop every node: SIGTERM (a controlled shutdown, SIGKILL after 60 s) or SIGKILL."""
        for node in self._nodes:
            self.stop_node(node.node_id, kill=kill, wait=False)
        for node in self._nodes:
            self._reap(node)

    def stop_node(self, node_id: int, kill: bool = False, wait: bool = True) -> None:
        node = self._node(node_id)
        if node.process is not None and node.process.poll() is None:
            os.kill(node.process.pid, signal.SIGKILL if kill else signal.SIGTERM)
        if wait:
            self._reap(node)

    # -- internals -------------------------------------------------------------------------
    def _node(self, node_id: int) -> _Node:
        for node in self._nodes:
            if node.node_id == node_id:
                return node
        raise KeyError(node_id)

    def _create(self) -> None:
        java = _java()
        if java is None:
            raise BrokerError("Apache Kafka needs Java 17+: no java on PATH (nor JAVA_HOME)")
        self._lib = resolve_runtime(self.home, self.version)
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="streamapp-kafka-"))
            self._own_dir = True
        ports = [(free_port(), free_port()) for _ in range(self.nodes)]
        self._nodes = [
            _Node(i + 1, port, cport, _mkdir(self.data_dir / f"node-{i + 1}"))
            for i, (port, cport) in enumerate(ports)
        ]
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        for node in self._nodes:
            config = node.data / "server.properties"
            config.write_text(self.server_properties(node, self._nodes))
            (node.data / "log4j2.properties").write_text(_LOG4J.format(log=node.log))
            command = [
                *self._java_command(node, java, heap_mb=128),
                "kafka.tools.StorageTool",
                "format",
                f"--cluster-id={cluster_id}",  # '=': an id may begin with '-'
                "-c",
                str(config),
                *self.format_args,
            ]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise BrokerError(f"formatting Kafka storage failed: {done.stderr.strip()[-500:]}")

    def server_properties(self, node: _Node, cluster: Sequence[_Node]) -> str:
        """The ``server.properties`` of ``node`` in ``cluster`` (every node, the controller
        quorum's voters): the defaults for tests, then :attr:`properties`."""
        replicas = min(3, self.nodes)
        voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in cluster)
        listener = self.listener
        defaults = {
            "process.roles": "broker,controller",
            "node.id": str(node.node_id),
            "controller.quorum.voters": voters,
            "listeners": f"{listener}://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:"
            f"{node.controller_port}",
            "advertised.listeners": f"{listener}://127.0.0.1:{node.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": listener,
            "listener.security.protocol.map": f"{listener}:{listener},CONTROLLER:PLAINTEXT",
            "log.dirs": str(node.data / "log"),
            "num.partitions": "1",
            "default.replication.factor": str(replicas),
            "min.insync.replicas": str(max(1, replicas - 1)),
            "offsets.topic.replication.factor": str(replicas),
            "offsets.topic.num.partitions": "1",
            "transaction.state.log.replication.factor": str(replicas),
            "transaction.state.log.min.isr": str(max(1, replicas - 1)),
            "transaction.state.log.num.partitions": "1",
            "share.coordinator.state.topic.replication.factor": str(replicas),
            "share.coordinator.state.topic.min.isr": str(max(1, replicas - 1)),
            "group.initial.rebalance.delay.ms": "0",
            "group.min.session.timeout.ms": "500",
            # KIP-848 groups: the broker owns the session and heartbeat (tests evict in seconds)
            "group.consumer.min.session.timeout.ms": "1000",
            "group.consumer.session.timeout.ms": "6000",
            "group.consumer.min.heartbeat.interval.ms": "250",
            "group.consumer.heartbeat.interval.ms": "1000",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "log.segment.bytes": str(64 * 1024 * 1024),
        }
        merged = {**defaults, **self.properties}
        return "".join(f"{key}={value}\n" for key, value in merged.items())

    def _java_command(self, node: _Node, java: str, heap_mb: int) -> list[str]:
        assert self._lib is not None
        return [
            java,
            f"-Xmx{heap_mb}m",
            f"-Xms{min(heap_mb, 256)}m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={node.data / 'log4j2.properties'}",
            "-cp",
            f"{self._lib}/*",
        ]

    def _launch(self, node: _Node) -> None:
        java = _java()
        assert java is not None
        with (node.data / "stdout.log").open("ab") as out:
            node.process = subprocess.Popen(
                [
                    *self._java_command(node, java, self.heap_mb),
                    "kafka.Kafka",
                    str(node.data / "server.properties"),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
            )

    def _reap(self, node: _Node) -> None:
        process, node.process = node.process, None
        if process is None:
            return
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_serving(self) -> None:
        from confluent_kafka import KafkaException
        from confluent_kafka.admin import AdminClient

        running = [n for n in self._nodes if n.process is not None]
        bootstrap = ",".join(f"127.0.0.1:{n.port}" for n in running)
        admin = AdminClient({**self.client, "bootstrap.servers": bootstrap, "log_level": 0})
        deadline = time.monotonic() + self.start_timeout
        while True:
            for node in running:
                assert node.process is not None
                if node.process.poll() is not None:
                    node.process = None
                    raise BrokerError(f"Kafka node {node.node_id} exited: {node.log_tail()}")
            try:
                brokers = admin.list_topics(timeout=1).brokers
                if all(node.node_id in brokers for node in running):
                    return
            except KafkaException:  # not serving yet
                pass
            if time.monotonic() > deadline:
                tails = " | ".join(n.log_tail(300) for n in running)
                raise BrokerError(
                    f"{self.name} did not serve in {self.start_timeout:.0f} s: {tails}"
                )
            time.sleep(0.2)


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamapp.kafka.apache check|fetch|serve``.

    ``check`` says in one line which broker the tests will use (resolving the jars when it is
    Apache Kafka; exit 1 under CI when Java or Maven is missing), ``fetch`` resolves the jars,
    ``serve`` runs a cluster in the foreground until Ctrl-C.
    """
    import argparse

    from streamapp.kafka.brokers import EXTERNAL_ENV, choose_broker

    parser = argparse.ArgumentParser(prog="python -m streamapp.kafka.apache")
    parser.add_argument("command", choices=["check", "fetch", "serve"])
    parser.add_argument("--nodes", type=int, default=1, help="serve: the number of nodes")
    args = parser.parse_args(argv)
    try:
        if args.command == "check" and os.environ.get(EXTERNAL_ENV):
            print(f"tests run on the cluster at {os.environ[EXTERNAL_ENV]} ({EXTERNAL_ENV})")
        elif args.command == "check":
            choice = choose_broker()
            if choice.kind == "kafka":
                resolve_runtime()
            print(choice.why)
        elif args.command == "fetch":
            print(resolve_runtime())
        else:
            _serve(args.nodes)
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1
    return 0


def _serve(nodes: int) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with ApacheKafka(nodes=nodes) as kafka:
        print(f"{kafka.name} serving on {kafka.bootstrap_servers} (Ctrl-C stops it)", flush=True)
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    raise SystemExit(_main())
