"""The notifier tests' servers: a real SMTP server (aiosmtpd) and a local
webhook receiver, each on a port of its own."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from tests.notifier.test_channels import Inbox, Receiver
from tests.replicas import free_port


@pytest.fixture
def inbox() -> Iterator[tuple[Inbox, int]]:
    box, port = Inbox(), free_port()  # aiosmtpd's Controller checks its port: no 0
    controller = Controller(box, hostname="127.0.0.1", port=port)
    controller.start()
    yield box, port
    controller.stop()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    got: list[tuple[dict[str, str], bytes]] = []
    answers: list[int] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            got.append(({k.lower(): v for k, v in self.headers.items()}, body))
            self.send_response(answers.pop(0) if answers else 204)
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield Receiver(f"http://127.0.0.1:{server.server_address[1]}/eap", got, answers)
    server.shutdown()
    server.server_close()
