"""How our services prove who they are to each other: a short-lived JWT,
role `service`, subject the calling service's name, signed with that
service's own key (`service-<name>.key` in EAP_SERVICE_KEYS_DIR; its public
half `service-<name>.pem` is among every service's trusted keys).

In development mode without a key the calls carry no token and the callee
treats them as development calls (auth.py).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import jwt

from services.runtime.config import Settings
from services.runtime.errors import ConfigError
from services.runtime.keys import SERVICE_KID_PREFIX, SigningKey, load_signing_key, service_of
from services.runtime.tenancy import TENANT_HEADER, current_tenant
from services.runtime.tls import Channels

LIFETIME_SECONDS = 300
RENEW_BEFORE_SECONDS = 60  # a token is renewed this long before it expires

Metadata = tuple[tuple[str, str], ...]


class ServiceCredentials:
    def __init__(self, name: str, settings: Settings) -> None:
        self._name = name
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        # Never longer than the callee accepts (EAP_JWT_MAX_LIFETIME_SECONDS).
        self._lifetime = min(LIFETIME_SECONDS, settings.jwt_max_lifetime_seconds)
        self._key: SigningKey | None = None
        if settings.service_keys_dir:
            folder = Path(settings.service_keys_dir)
            mine = sorted(
                (
                    path
                    for path in folder.glob(f"{SERVICE_KID_PREFIX}{name}*.key")
                    if service_of(path.stem) == name
                ),
                key=lambda path: (path.stem.count("."), path.stem),  # unversioned first
            )
            if mine:
                self._key = load_signing_key(mine[-1])  # the newest while a key rotates
        if self._key is None and settings.auth_mode == "jwt":
            raise ConfigError(
                "EAP_SERVICE_KEYS_DIR",
                f"must hold {SERVICE_KID_PREFIX}{name}.key when EAP_AUTH_MODE=jwt",
            )
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0
        self._channels = Channels(settings.tls_dir)

    def channel(self, address: str, old: grpc.aio.Channel | None = None) -> grpc.aio.Channel:
        """A channel to another of our services at `address`: mutual TLS
        with this service's certificate where TLS is configured. `old`, the
        channel in use, is kept until its certificate rotates."""
        if old is not None and not self._channels.stale(old):
            return old
        if old is not None:
            self._channels.retire(old)
        return self._channels.open(address)

    def metadata(self) -> Metadata:
        """What to send with a call: the service's current token, if any,
        and the tenant it calls for (the current call's or loop's)."""
        tenant = current_tenant()
        on_behalf: Metadata = ((TENANT_HEADER, tenant),) if tenant else ()
        if self._key is None:
            return on_behalf
        now = time.time()
        with self._lock:
            if now > self._expires - RENEW_BEFORE_SECONDS:
                self._expires = now + self._lifetime
                self._token = jwt.encode(
                    {
                        "sub": self._name,
                        "role": "service",
                        "iss": self._issuer,
                        "aud": self._audience,
                        "iat": int(now),
                        "exp": int(self._expires),
                    },
                    self._key.key,
                    algorithm=self._key.algorithm,
                    headers={"kid": self._key.kid},
                )
            return (("authorization", f"Bearer {self._token}"), *on_behalf)
