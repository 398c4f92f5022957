"""Issue 14, item 3: with EAP_METRICS_TOKEN(_FILE) set, `/metrics` answers
only a scrape that brings the bearer token."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path

from services.runtime.config import Settings
from services.runtime.server import start
from tests import stores

TOKEN = "s3cret-scrape-token"


def _get(port: int, path: str = "/metrics", token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.read().decode()


async def test_metrics_want_the_bearer_token_when_one_is_set(tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")  # as a mounted Secret, newline and all
    settings = Settings.from_env(
        {
            "EAP_GRPC_ADDRESS": "127.0.0.1:0",
            "EAP_METRICS_PORT": "0",
            "EAP_METRICS_TOKEN_FILE": str(tmp_path / "token"),
        }
    )
    assert settings.metrics_token == TOKEN
    settings = replace(settings, database_url=stores.migrated_sqlite(tmp_path / "eap.db"))
    server = await start([], settings)
    try:
        port = server.metrics_port
        assert port
        for token in (None, "wrong", TOKEN + "x", ""):
            status, body = await asyncio.to_thread(_get, port, token=token)
            assert status == 401 and "grpc_server" not in body, token
        status, body = await asyncio.to_thread(_get, port, token=TOKEN)
        assert status == 200 and "grpc_server_started_total" in body
        # Only /metrics is served, token or not.
        assert (await asyncio.to_thread(_get, port, "/", TOKEN))[0] == 404
    finally:
        await server.stop(0)


async def test_metrics_are_open_without_a_token(tmp_path: Path) -> None:
    settings = Settings(
        grpc_address="127.0.0.1:0",
        metrics_port=0,
        database_url=stores.migrated_sqlite(tmp_path / "eap.db"),
    )
    assert settings.metrics_token is None
    server = await start([], settings)
    try:
        assert server.metrics_port
        status, body = await asyncio.to_thread(_get, server.metrics_port)
        assert status == 200 and "grpc_server_started_total" in body
    finally:
        await server.stop(0)
