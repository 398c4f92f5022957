"""The Prometheus endpoint, optionally behind a bearer token.

prometheus_client's own `start_http_server` answers anyone who reaches the
port. With EAP_METRICS_TOKEN (or EAP_METRICS_TOKEN_FILE, a mounted Secret)
set, a scrape must send `Authorization: Bearer <token>`; without it or with
another token it gets 401 and no metrics. The other way to keep the port
private is the NetworkPolicy that admits it only from Prometheus
(deploy/k8s/README.md); either or both may be used.

Only `/metrics` is served (what Prometheus asks for): the series there are
operational, with no series naming a small group (services/quota/metrics.py).
"""

from __future__ import annotations

import hmac
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import REGISTRY, make_wsgi_app

METRICS_PATH = "/metrics"

StartResponse = Callable[..., Any]
Environ = dict[str, Any]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    # A slow scraper must not hold up the next one, nor the process on exit.
    daemon_threads = True


class _ThreadingServer6(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        # Scrapes every 15 s would fill stderr; the runtime logs in JSON.
        pass


def protected(
    app: Callable[[Environ, StartResponse], Iterable[bytes]], token: str | None
) -> Callable[[Environ, StartResponse], Iterable[bytes]]:
    """`app` answering `/metrics` only, and only to the bearer of `token`
    when one is set."""
    expected = f"Bearer {token}".encode() if token else None

    def serve(environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO", "/") != METRICS_PATH:
            start_response("404 Not Found", [("Content-Type", "text/plain")])
            return [b"not found\n"]
        if expected is not None:
            given = str(environ.get("HTTP_AUTHORIZATION", "")).encode()
            # In constant time, so that the token cannot be guessed byte by byte.
            if not hmac.compare_digest(given, expected):
                start_response(
                    "401 Unauthorized",
                    [
                        ("Content-Type", "text/plain"),
                        ("WWW-Authenticate", 'Bearer realm="metrics"'),
                    ],
                )
                return [b"a bearer token is required\n"]
        return app(environ, start_response)

    return serve


def start_metrics_server(port: int, addr: str, token: str | None) -> WSGIServer:
    """Serves the process's metrics on `addr`:`port` in a daemon thread; the
    server's `server_port` is the port bound (for `port` 0)."""
    server = make_server(
        addr,
        port,
        protected(make_wsgi_app(REGISTRY), token),
        server_class=_ThreadingServer6 if ":" in addr else _ThreadingServer,
        handler_class=_QuietHandler,
    )
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
