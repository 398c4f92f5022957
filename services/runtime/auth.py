"""Who is calling: bearer JWTs signed with an asymmetric key (ES256 or
RS256), checked against the trusted keys: the PEM directory (keys.py) and
the identity provider's published key set (jwks.py), either or both.

A token must carry `iss`, `aud`, `sub`, `exp` and `iat`; `nbf` is honoured.
Clocks may differ by `EAP_JWT_LEEWAY_SECONDS` (30 s): a token issued or
valid only further in the future is refused; `exp` has no leeway. A token may live at most
`EAP_JWT_MAX_LIFETIME_SECONDS` (an hour) from `iat` to `exp`: a stolen
long-lived token would otherwise be good for as long as its issuer said,
and the provider's own lifetime is not ours to trust. Refusals name the
rule, never the token or its claims.

Every call's metadata goes through `Authenticator.authenticate`; the interceptor
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

A user's token names their tenant in the `tenant` claim (tenancy.py):
required where more than one tenant is served, and one not served here is
refused. Our services name the tenant they call for in the `x-eap-tenant`
header, which no user's call may carry. An employee's token may carry their
`agency` and `staff_category`, which stand where the people directory does
not know them (matcher/registry/staff.py).

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

import math
import time
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import jwt

from services.runtime.config import Settings
from services.runtime.errors import NotFound, PermissionDenied, Unauthenticated
from services.runtime.jwks import JwksKeys
from services.runtime.keys import SERVICE_KID_PREFIX, KeyRing, VerifyingKey, service_of
from services.runtime.tenancy import TENANT_CLAIM, TENANT_HEADER, tenant_of_link

Metadata = Sequence[tuple[str, str | bytes]]

REQUIRED_CLAIMS = ("exp", "iat", "sub", "iss", "aud")
ATTRIBUTE_CLAIMS = ("agency", "staff_category")  # an employee's, where the provider has them


class Role(StrEnum):
    EMPLOYEE = "employee"  # a staff member using the programme
    COUNSELOR = "counselor"  # a contracted counselor
    SUPERVISOR = "supervisor"  # a line manager: refers, never sees cases
    ADMIN = "admin"  # EAP administrators: bookings, quotas, registry
    HR = "hr"  # HR reporting and programme planning: aggregates only
    AUDITOR = "auditor"  # reads the audit trail and the ledger
    OPERATOR = "operator"  # health and metrics only
    SERVICE = "service"  # one of our services calling another
    # The holder of a one-time link (a survey's): no sign-in, the token in
    # the request is the credential, for the link's methods only
    # (policy.LINK_METHODS).
    LINK = "link"


@dataclass(frozen=True)
class Identity:
    subject: str
    role: Role
    tenant: str = ""  # whose data the caller works on (tenancy.py)
    # An employee's agency and staff category, where their token says
    # (the `agency` and `staff_category` claims); else the people directory's.
    agency: str = ""
    staff_category: str = ""


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
        self._leeway = settings.jwt_leeway_seconds
        self._max_lifetime = settings.jwt_max_lifetime_seconds
        self._tenants = settings.tenants
        self.jwks = (
            JwksKeys(
                settings.jwt_jwks_url,
                settings.oidc_issuer_url,
                require_https=settings.auth_mode == "jwt",
            )
            if settings.jwt_jwks_url or settings.oidc_issuer_url
            else None
        )

    def identify(self, metadata: Metadata) -> Identity:
        """The caller, checked with the keys at hand; never waits."""
        token = self._bearer(metadata)
        if token is None:
            return self._development_call(metadata)
        return self._verify(token, self._key_for(self._kid(token)), metadata)

    async def authenticate(self, metadata: Metadata) -> Identity:
        """`identify`, but keeping the provider's key set fresh: a token
        naming a key not at hand waits for the set to be fetched again (off
        the event loop, bounded and rate-limited: jwks.py)."""
        jwks = self.jwks
        if jwks is None:
            return self.identify(metadata)
        token = self._bearer(metadata)
        if token is None:
            return self._development_call(metadata)
        kid = self._kid(token)
        known = self._keys.keys().get(kid) or jwks.keys().get(kid)
        # Service keys never come from the provider: no fetch for them.
        if known is None and not kid.startswith(SERVICE_KID_PREFIX):
            await jwks.refresh(wait=True)
        elif jwks.stale():
            await jwks.refresh(wait=False)  # this call goes on with the keys at hand
        return self._verify(token, self._key_for(kid), metadata)

    def link_holder(self, token: str) -> Identity:
        """The caller of a link's method: the tenant its token names, or
        NOT_FOUND, the same answer as a token of that tenant it does not
        know (a guess learns nothing of which tenants are served)."""
        tenant = tenant_of_link(token)
        if tenant is None or tenant not in self._tenants:
            raise NotFound("no such link")
        return Identity(Role.LINK.value, Role.LINK, tenant)

    def _development_call(self, metadata: Metadata) -> Identity:
        """A development call without a token: an administrator, of the
        tenant its header names (our services' calls) or the first."""
        return Identity(DEV_IDENTITY.subject, DEV_IDENTITY.role, self._tenant(None, metadata))

    def _tenant(self, claims: dict[str, object] | None, metadata: Metadata) -> str:
        """The caller's tenant: a user's token's claim; a service's (or a
        development call's) header. One tenant served is the default."""
        header = next((str(v) for k, v in metadata if k == TENANT_HEADER), None)
        trusted_header = claims is None or claims.get("role") == Role.SERVICE.value
        if claims is not None and not trusted_header:
            if header is not None:
                raise PermissionDenied(
                    f"only a service call may name its tenant in {TENANT_HEADER}"
                )
            named = claims.get(TENANT_CLAIM)
        else:
            named = header
        if named is None and len(self._tenants) == 1:
            return self._tenants[0]
        if named is None:
            raise Unauthenticated(f"the caller names no tenant (`{TENANT_CLAIM}` claim)")
        if named not in self._tenants:
            # The claim is the identity provider's: no tenant of ours is no access.
            raise PermissionDenied("the caller's tenant is not served here")
        return str(named)

    def _bearer(self, metadata: Metadata) -> str | None:
        """The bearer token, or None for a development call without one."""
        header = next((str(v) for k, v in metadata if k == "authorization"), None)
        if header is None:
            if self._dev:
                return None
            raise Unauthenticated("missing bearer token")
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token:
            raise Unauthenticated("authorization header must be `Bearer <token>`")
        return token

    @staticmethod
    def _kid(token: str) -> str:
        try:
            kid = jwt.get_unverified_header(token).get("kid")
        except jwt.InvalidTokenError:
            raise Unauthenticated("invalid token: not a JWT") from None
        if not isinstance(kid, str) or not kid:
            raise Unauthenticated("token names no signing key (kid)")
        return kid

    def _verify(self, token: str, key: VerifyingKey, metadata: Metadata) -> Identity:
        try:
            claims = jwt.decode(
                token,
                key.key,
                algorithms=[key.algorithm],
                audience=self._audience,
                issuer=self._issuer,
                # `exp` with no leeway (a token never outlives its expiry);
                # `iat` and `nbf` with ours, in _check_times.
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("token expired") from None
        except jwt.MissingRequiredClaimError as error:
            raise Unauthenticated(f"token lacks the `{error.claim}` claim") from None
        except jwt.InvalidTokenError as error:
            raise Unauthenticated(f"invalid token: {type(error).__name__}") from None
        self._check_times(claims)
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
        attributes = {
            claim: value
            for claim in ATTRIBUTE_CLAIMS
            if role is Role.EMPLOYEE and isinstance(value := claims.get(claim), str)
        }
        return Identity(subject, role, self._tenant(claims, metadata), **attributes)

    def _check_times(self, claims: dict[str, object]) -> None:
        """Numeric dates that are numbers (PyJWT takes "123" too); `iat` and
        `nbf` no further ahead than the clock skew allowed (PyJWT's own
        `iat` check may go: pyjwt#939, and its leeway would stretch `exp`
        too); the lifetime."""
        issued, expires = _numeric_date(claims, "iat"), _numeric_date(claims, "exp")
        not_before = _numeric_date(claims, "nbf") if "nbf" in claims else issued
        if max(issued, not_before) > time.time() + self._leeway:
            raise Unauthenticated("token not valid yet (iat or nbf in the future)")
        if expires - issued > self._max_lifetime:
            raise Unauthenticated(
                f"token lifetime exceeds the maximum of {self._max_lifetime} s "
                "(EAP_JWT_MAX_LIFETIME_SECONDS)"
            )

    def _key_for(self, kid: str) -> VerifyingKey:
        # The PEM directory first: it holds the service keys, and an operator's
        # file wins over the provider's set.
        key = self._keys.keys().get(kid)
        if key is None and self.jwks is not None and not kid.startswith(SERVICE_KID_PREFIX):
            key = self.jwks.keys().get(kid)
        if key is None:
            raise Unauthenticated("token signed by an unknown key")
        return key


def _numeric_date(claims: dict[str, object], claim: str) -> float:
    value = claims[claim]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise Unauthenticated(f"invalid token: `{claim}` must be a number")
    return float(value)
