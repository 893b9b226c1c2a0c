"""The worker's HTTP endpoints: ``/metrics`` (Prometheus), ``/healthz`` and ``/readyz``.

A ``ThreadingHTTPServer`` on a daemon thread: the poll loop never waits on a scrape, and a
scrape reads counters the loop keeps anyway.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import orjson
from prometheus_client import CONTENT_TYPE_LATEST

from streamapp.errors import ConfigError

__all__ = ["Check", "OpsServer"]

logger = logging.getLogger(__name__)

Check = Callable[[], dict[str, bool]]
"""Named checks; the endpoint answers 200 when all pass, else 503, with the checks as JSON."""


class OpsServer:
    """Serves ``render_metrics()`` at ``/metrics`` and the checks at ``/healthz``/``/readyz``.

    ``port=0`` picks a free port; :attr:`port` is the one bound.
    """

    def __init__(
        self,
        host: str,
        port: int,
        render_metrics: Callable[[], bytes],
        healthy: Check,
        ready: Check,
    ) -> None:
        routes: dict[str, Callable[[], tuple[int, str, bytes]]] = {
            "/metrics": lambda: (200, CONTENT_TYPE_LATEST, render_metrics()),
            "/healthz": lambda: _check_response(healthy()),
            "/readyz": lambda: _check_response(ready()),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    status, content_type, body = 404, "text/plain", b"not found\n"
                else:
                    try:
                        status, content_type, body = route()
                    except Exception:  # a failing scrape must not take the worker down
                        logger.exception("%s failed", self.path)
                        status, content_type, body = 500, "text/plain", b"error\n"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                logger.debug("http: " + format, *args)

        try:
            self._server = ThreadingHTTPServer((host, port), Handler)
        except OSError as exc:
            raise ConfigError(
                f"cannot serve metrics on {host}:{port} ({exc}); set http.port "
                "(STREAMAPP_HTTP__PORT, 0 picks a free one) or http.enabled=false"
            ) from exc
        self._server.daemon_threads = True
        self.host = host
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="streamapp-http", daemon=True
        )

    def start(self) -> None:
        self._thread.start()
        logger.info("serving /metrics, /healthz and /readyz on http://%s:%d", self.host, self.port)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _check_response(checks: dict[str, bool]) -> tuple[int, str, bytes]:
    ok = all(checks.values())
    body = orjson.dumps({"status": "ok" if ok else "failing", "checks": checks})
    return (200 if ok else 503), "application/json", body + b"\n"
