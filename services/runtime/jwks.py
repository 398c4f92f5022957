"""Keys an identity provider publishes: a JWKS URL (`EAP_JWT_JWKS_URL`), or
an OpenID Connect issuer (`EAP_OIDC_ISSUER_URL`) whose discovery document,
`<issuer>/.well-known/openid-configuration`, names one (`jwks_uri`). They
are trusted beside the PEM directory (keys.py); auth.py asks both.

PyJWT's `PyJWKClient` fetches and parses the key set. It is synchronous
(urllib), so every fetch runs on a worker thread of its own, never on the
event loop that serves every call, and a caller waits for it at most
`FETCH_TIMEOUT_SECONDS` (urllib gives up after as long).

Caching: the keys fetched are used for `LIFESPAN_SECONDS`; after that the
next call starts a refresh in the background and is verified with the keys
at hand, so a key the provider retires stops being honoured within a
lifespan, and a provider that is down locks nobody out. A token naming a key
id the set lacks (a key just rotated in) waits for one refresh. Refreshes,
whatever their outcome, are at most one per `COOLDOWN_SECONDS`: a flood of
tokens with made-up key ids costs the provider one request per cooldown,
and their callers UNAUTHENTICATED.

Only signing keys we accept are taken (ES256 on P-256, RS256 of 2048 bits or
more, public halves, `use` sig or unset), and never a key whose id starts
with `service-`: those speak for our own services and come only from the
PEM directory, so the provider cannot mint a service's identity.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import threading
import time
import urllib.request
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import urlparse

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt import PyJWK, PyJWKClient

from services.runtime.errors import ConfigError
from services.runtime.keys import SERVICE_KID_PREFIX, VerifyingKey, algorithm_of

log = logging.getLogger("eap.auth")

LIFESPAN_SECONDS = 300.0
COOLDOWN_SECONDS = 30.0
FETCH_TIMEOUT_SECONDS = 5.0
DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DISCOVERY_BYTES = 1 << 20  # a discovery document is a few KB


class JwksError(Exception):
    """The provider's keys could not be had; the message names no token."""


def check_url(url: str, where: str, require_https: bool) -> str:
    """`url` if it is one we may fetch keys from, else ConfigError naming
    `where`. Keys fetched in clear could be anyone's, so with
    `require_https` (jwt mode) plain http is only for the loopback."""
    parsed = urlparse(url)
    if parsed.scheme not in ("http", "https") or not parsed.hostname:
        raise ConfigError(where, "must be an http:// or https:// URL")
    if require_https and parsed.scheme != "https" and not _loopback(parsed.hostname):
        raise ConfigError(where, "must be https:// (http:// only on the loopback)")
    return url


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Discovery follows no redirect, as PyJWKClient does not for the key set."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def verifying_keys(jwks: list[PyJWK]) -> dict[str, VerifyingKey]:
    """The keys of a fetched set that we accept, by key id."""
    found: dict[str, VerifyingKey] = {}
    for jwk in jwks:
        kid = jwk.key_id
        if not kid or kid.startswith(SERVICE_KID_PREFIX):
            continue
        key = jwk.key
        if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
            continue  # a private or symmetric key has no business in a JWKS
        try:
            algorithm = algorithm_of(key, "JWKS")
        except ConfigError:
            continue  # another curve, a short RSA key
        if jwk.algorithm_name != algorithm:
            continue  # e.g. PS256 on an RSA key: not what we would verify with
        found[kid] = VerifyingKey(kid, key, algorithm)
    return found


class JwksKeys:
    """The provider's current keys, and their refresh."""

    def __init__(
        self,
        jwks_url: str | None = None,
        issuer_url: str | None = None,
        require_https: bool = True,
    ) -> None:
        if not (jwks_url or issuer_url):
            raise ValueError("a JWKS URL or an OIDC issuer URL is needed")
        self._issuer_url = issuer_url
        self._require_https = require_https
        # Read once: tests shorten them before a server starts.
        self.lifespan = LIFESPAN_SECONDS
        self.cooldown = COOLDOWN_SECONDS
        self.timeout = FETCH_TIMEOUT_SECONDS
        # A configured JWKS URL wins; an issuer's is found by discovery.
        self._client = self._client_for(jwks_url) if jwks_url else None
        self._keys: dict[str, VerifyingKey] = {}
        self._fetched_at: float | None = None  # last success (monotonic)
        self._attempted_at: float | None = None  # last attempt, either outcome
        self._fetching: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # fetch() is also callable from threads
        # One thread of our own: CPU work elsewhere on the default pool
        # cannot hold up authentication, nor a slow provider that pool.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="eap-jwks")
        self.fetches = 0  # attempts, for tests and operators

    @property
    def source(self) -> str:
        """Where the keys come from, for logs (configuration, not secret)."""
        return self._client.uri if self._client is not None else str(self._issuer_url)

    def keys(self) -> Mapping[str, VerifyingKey]:
        """The keys at hand; never waits."""
        return self._keys

    def stale(self) -> bool:
        return self._fetched_at is None or time.monotonic() - self._fetched_at > self.lifespan

    async def refresh(self, wait: bool) -> None:
        """Fetches the key set again, unless a fetch is under way (then joins
        it) or the cooldown since the last attempt has not passed. With
        `wait`, returns when it is done or after the timeout; otherwise at
        once. Never raises: failures are logged and the keys at hand kept."""
        loop = asyncio.get_running_loop()
        task = self._fetching
        if task is None or task.done() or task.get_loop() is not loop:
            now = time.monotonic()
            if self._attempted_at is not None and now - self._attempted_at < self.cooldown:
                return
            self._attempted_at = now
            task = self._fetching = loop.create_task(self._fetch_off_loop(), name="jwks-fetch")
        if wait:
            # Shielded: a caller that stops waiting leaves the fetch running
            # for the next one, rather than starting another.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), self.timeout)

    async def _fetch_off_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self.fetch)
        except Exception as error:  # logged; the keys at hand stay
            log.warning(
                "identity provider keys not refreshed",
                extra={"source": self.source, "error_type": type(error).__name__},
            )

    def fetch(self) -> None:
        """Fetches and replaces the keys: network I/O, so not on the event
        loop. Raises on failure, keeping the keys at hand."""
        with self._lock:
            self.fetches += 1
            self._attempted_at = time.monotonic()
            client = self._client
            if client is None:
                client = self._discover()
            try:
                found = verifying_keys(client.get_signing_keys(refresh=True))
            except Exception:
                if self._issuer_url is not None:
                    self._client = None  # the provider may have moved its keys: discover again
                raise
            if not found:
                raise JwksError("the key set holds no key we accept")
            before = set(self._keys)
            self._client = client
            self._keys = found
            self._fetched_at = time.monotonic()
        if set(found) != before:
            log.info(
                "identity provider keys loaded",
                extra={"source": client.uri, "kids": sorted(found)},
            )

    def _discover(self) -> PyJWKClient:
        """The issuer's key set client, from its discovery document."""
        assert self._issuer_url is not None
        issuer = self._issuer_url.rstrip("/")
        opener = urllib.request.build_opener(_NoRedirect())
        request = urllib.request.Request(
            issuer + DISCOVERY_PATH, headers={"Accept": "application/json"}
        )
        with opener.open(request, timeout=self.timeout) as response:
            body = response.read(MAX_DISCOVERY_BYTES + 1)
        if len(body) > MAX_DISCOVERY_BYTES:
            raise JwksError("the discovery document is too large")
        document = json.loads(body)
        if not isinstance(document, dict):
            raise JwksError("the discovery document is not a JSON object")
        # OpenID Connect Discovery 1.0, 4.3: the document must be the
        # issuer's own, or another provider's keys could be taken for its.
        named = document.get("issuer")
        if not isinstance(named, str) or named.rstrip("/") != issuer:
            raise JwksError("the discovery document is another issuer's")
        jwks_uri = document.get("jwks_uri")
        if not isinstance(jwks_uri, str):
            raise JwksError("the discovery document names no jwks_uri")
        try:
            check_url(jwks_uri, "jwks_uri", self._require_https)
        except ConfigError as error:
            raise JwksError(str(error)) from None
        return self._client_for(jwks_uri)

    def _client_for(self, uri: str) -> PyJWKClient:
        # PyJWKClient's own cache is off: ours is what calls read without
        # waiting, and it keeps the keys when a refresh fails.
        return PyJWKClient(uri, cache_jwk_set=False, timeout=self.timeout)
