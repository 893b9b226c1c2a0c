"""An embedded Kafka-protocol broker (noida-db) for the demo and the tests.

The broker binary is started directly (not through its console-script wrapper, which
would orphan it when killed), on a free port, and stopped by its own PID.
"""

from __future__ import annotations

import importlib.metadata
import importlib.resources
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Self

from streamapp.errors import BrokerError

__all__ = ["LocalBroker", "OwnedBroker", "free_port"]

logger = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


class OwnedBroker:
    """What every broker the project starts shares: ``with`` starts and closes it, and
    ``close`` stops it and removes the data folder it made for itself."""

    data_dir: Path | None
    _own_dir: bool

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self, kill: bool = False) -> None:
        raise NotImplementedError

    def close(self) -> None:
        self.stop()
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalBroker(OwnedBroker):
    """``with LocalBroker() as broker: broker.bootstrap_servers``.

    Parameters
    ----------
    data_dir
        Where the broker keeps its log; a temporary directory (removed on stop) if ``None``.
    port
        A fixed port, or ``None`` for a free one (retried on bind failure).
    """

    def __init__(
        self,
        data_dir: Path | None = None,
        port: int | None = None,
        start_timeout: float = 30.0,
        attempts: int = 5,
    ) -> None:
        self.data_dir = data_dir
        self.port = port
        self.start_timeout = start_timeout
        self.attempts = attempts
        self._process: subprocess.Popen[bytes] | None = None
        self._own_dir = False
        self._log_path: Path | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def name(self) -> str:
        return f"noida-db {importlib.metadata.version('noida-db')}"

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    @staticmethod
    def binary() -> Path:
        return Path(str(importlib.resources.files("noida_db") / "noida-db"))

    def start(self) -> LocalBroker:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="streamapp-broker-"))
            self._own_dir = True
        self.data_dir.mkdir(parents=True, exist_ok=True)
        fixed = self.port is not None
        last_error = ""
        for _ in range(1 if fixed else self.attempts):
            port = self.port if fixed else free_port()
            assert port is not None
            if self._launch(port):
                self.port = port
                logger.info("embedded broker pid %s on %s", self.pid, self.bootstrap_servers)
                return self
            last_error = self._log_tail()
        raise BrokerError(f"embedded broker did not start: {last_error}")

    def _launch(self, port: int) -> bool:
        assert self.data_dir is not None
        self._log_path = self.data_dir / "broker.log"
        log = self._log_path.open("ab")
        self._process = subprocess.Popen(
            [
                str(self.binary()),
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                str(port),
                "--data-dir",
                str(self.data_dir),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # a Ctrl-C in the terminal reaches us, not the broker
        )
        log.close()
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:  # exited: port taken or bad data dir
                self._process = None
                return False
            if _listening(port):
                return True
            time.sleep(0.05)
        self.stop()
        return False

    def _log_tail(self) -> str:
        if self._log_path and self._log_path.exists():
            return self._log_path.read_text(errors="replace")[-500:]
        return ""

    def stop(self, kill: bool = False) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after 10 s; ``kill`` goes straight to SIGKILL)."""
        process, self._process = self._process, None
        if process is None:
            return
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL if kill else signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
