"""Who is calling: bearer JWTs signed with an asymmetric key (ES256 or
RS256), checked against the trusted keys (keys.py), with issuer, audience
and expiry required.

Every call's metadata goes through `Authenticator.identify`; the interceptor
puts the resulting `Identity` in a context variable that handlers read with
`current_identity()`. What each role may then do is policy.py's.

Users' tokens come from the county's identity provider: `sub` is the
caller's pseudonymous id (an employee's employee id, a counselor's
counselor id) and `role` one of `Role`. The services call each other with
tokens they sign themselves (service_identity.py): role `service`, `sub` the
calling service's name, signed with a key `service-<name>` (or, while one
rotates, `service-<name>.<version>`); any other
key's `service` token, or a `service-` key's token for anyone else, is
refused, so no key can speak for a service it does not belong to.

Development mode (`EAP_AUTH_MODE=dev`, the embedded default): a call
without an `authorization` header is made by the subject `dev` with the role
`admin`, so `eapctl serve all` on a laptop needs no key, and the services
call each other without tokens. A call with a token is verified against the
trusted keys (by default `var/dev-keys`, where `eapctl token mint` keeps its
development key). The default address 127.0.0.1 keeps a development server
off the network; never run dev mode in production (the Kubernetes
manifests set `jwt`).
"""

from __future__ import annotations

from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jwt

from services.runtime.config import Settings
from services.runtime.errors import Unauthenticated
from services.runtime.keys import SERVICE_KID_PREFIX, KeyRing, VerifyingKey, service_of


class Role(StrEnum):
    EMPLOYEE = "employee"  # a staff member using the programme
    COUNSELOR = "counselor"  # a contracted counselor
    SUPERVISOR = "supervisor"  # a line manager: refers, never sees cases
    ADMIN = "admin"  # EAP administrators: bookings, quotas, registry
    HR = "hr"  # HR reporting and programme planning: aggregates only
    AUDITOR = "auditor"  # reads the audit trail and the ledger
    OPERATOR = "operator"  # health and metrics only
    SERVICE = "service"  # one of our services calling another


@dataclass(frozen=True)
class Identity:
    subject: str
    role: Role


DEV_IDENTITY = Identity(subject="dev", role=Role.ADMIN)
SYSTEM_IDENTITY = Identity(subject="system", role=Role.SERVICE)

_identity_var: ContextVar[Identity] = ContextVar("identity", default=SYSTEM_IDENTITY)


def current_identity() -> Identity:
    return _identity_var.get()


def set_identity(identity: Identity) -> None:
    _identity_var.set(identity)


class Authenticator:
    def __init__(self, settings: Settings) -> None:
        self._dev = settings.auth_mode == "dev"
        keys_dir = settings.jwt_keys_dir
        self._keys = KeyRing(Path(keys_dir) if keys_dir else None)
        self._issuer = settings.jwt_issuer
        self._audience = settings.jwt_audience

    def identify(self, metadata: Sequence[tuple[str, str | bytes]]) -> Identity:
        header = next((str(v) for k, v in metadata if k == "authorization"), None)
        if header is None:
            if self._dev:
                return DEV_IDENTITY
            raise Unauthenticated("missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization header must be `Bearer <token>`")
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token: not a JWT") from None
        key = self._key_for(kid)
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"invalid token: {type(error).__name__}") from None
        try:
            role = Role(str(claims.get("role")))
        except ValueError:
            raise Unauthenticated("token carries no known role") from None
        subject = str(claims["sub"])
        signed_by_service = key.kid.startswith(SERVICE_KID_PREFIX)
        if (role is Role.SERVICE) != signed_by_service or (
            signed_by_service and service_of(key.kid) != subject
        ):
            raise Unauthenticated("a service token must be signed with that service's own key")
        return Identity(subject=subject, role=role)

    def _key_for(self, kid: object) -> VerifyingKey:
        keys = self._keys.keys()
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token names no signing key (kid)")
        key = keys.get(kid)
        if key is None:
            raise Unauthenticated("token signed by an unknown key")
        return key
