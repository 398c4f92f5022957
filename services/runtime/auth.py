"""Who is calling: bearer JWTs checked against the configured key.

Every call's metadata goes through `Authenticator.identify`; the interceptor
puts the resulting `Identity` in a context variable that handlers read with
`current_identity()`.

Development mode (`EAP_AUTH_MODE=dev`, the embedded default): a call without
an `authorization` header is made by the subject `dev` with the role
`admin`, so that `eapctl serve all` on a laptop needs no key. A call with a
token is still verified when a key is configured. The default address
127.0.0.1 keeps a development server off the network; never run dev mode in
production (the Kubernetes manifests set `jwt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

import jwt

from services.runtime.config import Settings
from services.runtime.errors import Unauthenticated

ROLES = frozenset({"employee", "counselor", "admin", "hr", "auditor", "operator", "service"})


@dataclass(frozen=True)
class Identity:
    subject: str
    role: str


DEV_IDENTITY = Identity(subject="dev", role="admin")
SYSTEM_IDENTITY = Identity(subject="system", role="service")

_identity_var: ContextVar[Identity] = ContextVar("identity", default=SYSTEM_IDENTITY)


def current_identity() -> Identity:
    return _identity_var.get()


def set_identity(identity: Identity) -> None:
    _identity_var.set(identity)


def _algorithms(key: str) -> list[str]:
    if "BEGIN PUBLIC KEY" in key or "BEGIN RSA PUBLIC KEY" in key:
        return ["RS256", "ES256"]
    return ["HS256"]


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._dev = settings.auth_mode == "dev"
        self._key = settings.jwt_key
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience
        self._algorithms = _algorithms(self._key) if self._key else []

    def identify(self, metadata: Sequence[tuple[str, str | bytes]]) -> Identity:
        header = next((str(v) for k, v in metadata if k == "authorization"), None)
        if header is None:
            if self._dev:
                return DEV_IDENTITY
            raise Unauthenticated("missing bearer token")
        if self._key is None:
            return DEV_IDENTITY
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization header must be `Bearer <token>`")
        try:
            claims = jwt.decode(
                token,
                self._key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"invalid token: {type(error).__name__}") from None
        role = claims.get("role")
        if role not in ROLES:
            raise Unauthenticated("token carries no known role")
        return Identity(subject=str(claims["sub"]), role=str(role))
