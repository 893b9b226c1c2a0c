"""A Confluent-compatible Schema Registry for the tests, the benchmarks and docker-compose:
Apicurio Registry, built from Maven Central.

``registry_runtime/pom.xml`` beside this module pins the version. The first use builds it
once (``mvn package -Dquarkus.package.type=fast-jar``) into a cache folder, with the app
jar's own ``application.properties`` plus the index lines Quarkus needs to find the app's
beans in a dependency; a ``.complete`` stamp marks a finished build. Each registry is one JVM
on a free loopback port, H2 in a file, stopped by its own PID; clients speak the Confluent
API at :attr:`ApicurioRegistry.url` (``/apis/ccompat/v7``).

>>> APICURIO_VERSION
'2.4.2.Final'
"""

from __future__ import annotations

import logging
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from pathlib import Path

from streamapp.errors import BrokerError
from streamapp.kafka.apache import _java, java_missing
from streamapp.kafka.local_broker import free_port

__all__ = ["APICURIO_VERSION", "POM", "ApicurioRegistry", "build_registry"]

logger = logging.getLogger(__name__)

POM = Path(__file__).with_name("registry_runtime") / "pom.xml"
APICURIO_VERSION = "2.4.2.Final"  # the pom's apicurio.version; docker-compose runs the same
DEFAULT_HOME = Path(".streamapp") / "apicurio-registry"
_APP = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}"

# Quarkus builds its bean index from the application's own classes; the registry's are in
# the app jar, a dependency here, so it is indexed by name
_INDEX = """
quarkus.index-dependency.apicurio-registry-app.group-id=io.apicurio
quarkus.index-dependency.apicurio-registry-app.artifact-id=apicurio-registry-app
"""


def build_registry(home: Path = DEFAULT_HOME) -> Path:
    """The runnable ``quarkus-run.jar``, built with Maven the first time (about a minute
    and 210 MB of jars from Maven Central when nothing is cached)."""
    home = home.resolve()
    app = home / APICURIO_VERSION / "quarkus-app"
    if (app / ".complete").exists():
        return app / "quarkus-run.jar"
    mvn = shutil.which("mvn")
    if mvn is None:
        raise BrokerError(f"Apicurio Registry is not built in {app} and there is no mvn")
    home.mkdir(parents=True, exist_ok=True)
    project = Path(tempfile.mkdtemp(prefix="apicurio-build-", dir=home))
    try:
        logger.info(
            "building Apicurio Registry %s from Maven Central into %s", APICURIO_VERSION, app
        )
        shutil.copy(POM, project / "pom.xml")
        _mvn(mvn, project, "dependency:copy", f"-Dartifact={_APP}", f"-DoutputDirectory={project}")
        with zipfile.ZipFile(project / f"apicurio-registry-app-{APICURIO_VERSION}.jar") as jar:
            properties = jar.read("application.properties").decode("utf-8")
        resources = project / "src" / "main" / "resources"
        resources.mkdir(parents=True)
        (resources / "application.properties").write_text(properties + _INDEX)
        _mvn(mvn, project, "package", "-Dquarkus.package.type=fast-jar")
        built = project / "target" / "quarkus-app"
        (built / ".complete").touch()
        shutil.rmtree(app, ignore_errors=True)
        app.parent.mkdir(parents=True, exist_ok=True)
        built.rename(app)
    finally:
        shutil.rmtree(project, ignore_errors=True)
    return app / "quarkus-run.jar"


def _mvn(mvn: str, project: Path, *args: str) -> None:
    done = subprocess.run(
        [mvn, "-q", "-B", "-f", str(project / "pom.xml"), *args],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
        raise BrokerError(f"could not build Apicurio Registry: {' | '.join(tail)}")


class ApicurioRegistry:
    """One Apicurio Registry JVM on a free loopback port, H2 storage in ``data``: ``start``,
    ``stop`` (by its PID) and ``start`` again on the same port and schemas."""

    def __init__(
        self,
        data: Path,
        *,
        home: Path = DEFAULT_HOME,
        heap_mb: int = 256,
        start_timeout: float = 60,
    ) -> None:
        self.data = data
        self.home = home
        self.heap_mb = heap_mb
        self.start_timeout = start_timeout
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The Confluent-compatible API, what ``SchemaRegistryClient`` takes as its url."""
        return f"http://127.0.0.1:{self.port}/apis/ccompat/v7"

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None else None

    @property
    def log(self) -> Path:
        return self.data / "registry.log"

    def start(self) -> ApicurioRegistry:
        why = java_missing()
        if why is not None:
            raise BrokerError(f"Apicurio Registry cannot start: {why}")
        jar = build_registry(self.home)
        java = _java()
        assert java is not None
        self.data.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    java,
                    f"-Xmx{self.heap_mb}m",
                    "-XX:TieredStopAtLevel=1",  # starts in half the time; a test load is light
                    f"-Dquarkus.http.port={self.port}",
                    "-Dquarkus.http.host=127.0.0.1",
                    # H2 in a file of its own: a restart keeps the schemas and their ids
                    f"-Dquarkus.datasource.jdbc.url=jdbc:h2:file:{self.data / 'h2' / 'registry'}",
                    "-jar",
                    str(jar),
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self._wait_serving()
        logger.info("Apicurio Registry on %s (pid %s)", self.url, self.pid)
        return self

    def stop(self, kill: bool = False) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def _wait_serving(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while True:
            assert self.process is not None
            if self.process.poll() is not None:
                self.process = None
                raise BrokerError(f"Apicurio Registry exited: {self.log.read_text()[-800:]}")
            try:
                with urllib.request.urlopen(f"{self.url}/subjects", timeout=1) as answer:
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, OSError):  # not serving yet
                pass
            if time.monotonic() > deadline:
                self.stop(kill=True)
                raise BrokerError(f"Apicurio Registry did not serve in {self.start_timeout:.0f} s")
            time.sleep(0.2)

    def __enter__(self) -> ApicurioRegistry:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _main(argv: list[str] | None = None) -> int:
    """``python -m streamapp.kafka.schema_registry build|serve``: build the registry (once),
    or run one in the foreground until Ctrl-C."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m streamapp.kafka.schema_registry")
    parser.add_argument("command", choices=["build", "serve"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        if args.command == "build":
            print(build_registry())
            return 0
        with tempfile.TemporaryDirectory() as data, ApicurioRegistry(Path(data)) as registry:
            print(f"Apicurio Registry serving at {registry.url} (Ctrl-C stops it)", flush=True)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
    except BrokerError as exc:
        print(f"error: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())
