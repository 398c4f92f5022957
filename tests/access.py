"""Keys and tokens for tests of the suite in `jwt` mode, made the way
production makes them: an identity provider's key pair, one key pair per
calling service, and a stranger's key the suite does not trust."""

from __future__ import annotations

import base64
import secrets
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import grpc
import jwt
from cryptography.fernet import Fernet

from eap.matcher.v1 import matcher_pb2_grpc
from eap.quota.v1 import quota_pb2_grpc
from services.runtime import keys
from services.runtime.config import Settings
from services.runtime.server import RunningServer

Metadata = tuple[tuple[str, str], ...]

IDP = "idp-2027"


@dataclass(frozen=True)
class Keys:
    trusted: Path  # EAP_JWT_KEYS_DIR: public keys only
    services: Path  # EAP_SERVICE_KEYS_DIR: the services' private keys
    private: Path  # the identity provider's and the stranger's private keys
    data: Path  # EAP_DATA_KEYS_FILE: the directory's Fernet keys
    audit: Path  # EAP_AUDIT_KEYS_FILE: the audit trails' HMAC keys

    def sign(self, kid: str, claims: dict[str, object], signer: str | None = None) -> str:
        """A token with header `kid`, signed with `signer`'s key (default: kid's own)."""
        name = signer or kid
        folder = self.services if name.startswith("service-") else self.private
        key = keys.load_signing_key(folder / f"{name}.key")
        return jwt.encode(claims, key.key, algorithm=key.algorithm, headers={"kid": kid})

    def token(
        self, role: str, subject: str, kid: str = IDP, signer: str | None = None, **claims: object
    ) -> str:
        now = int(time.time())
        payload: dict[str, object] = {
            "sub": subject,
            "role": role,
            "iss": "eap",
            "aud": "eap-suite",
            "iat": now,
            "exp": now + 300,
            **claims,
        }
        return self.sign(kid, payload, signer)


def make_keys(root: Path) -> Keys:
    made = Keys(
        root / "trusted",
        root / "service-keys",
        root / "private",
        root / "data.keys",
        root / "audit.keys",
    )
    for folder in (made.trusted, made.services, made.private):
        folder.mkdir(parents=True)
    keys.generate(made.private, IDP)
    keys.generate(made.private, "stranger")
    for service in ("service-matcher", "service-calendar"):
        keys.generate(made.services, service)
        (made.services / f"{service}.pem").rename(made.trusted / f"{service}.pem")
    (made.private / f"{IDP}.pem").rename(made.trusted / f"{IDP}.pem")
    made.data.write_text(Fernet.generate_key().decode() + "\n")
    made.audit.write_text(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode() + "\n")
    return made


def secured(settings: Settings, made: Keys) -> Settings:
    """`settings` in jwt mode with `made`'s keys."""
    return replace(
        settings,
        auth_mode="jwt",
        jwt_keys_dir=str(made.trusted),
        service_keys_dir=str(made.services),
        data_keys_file=str(made.data),
        audit_keys_file=str(made.audit),
    )


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Secured:
    made: Keys
    server: RunningServer
    channel: grpc.aio.Channel

    def as_(self, role: str, subject: str) -> Metadata:
        return bearer(self.made.token(role, subject))

    @property
    def matcher(self) -> matcher_pb2_grpc.MatcherServiceAsyncStub:
        return matcher_pb2_grpc.MatcherServiceStub(self.channel)  # type: ignore[return-value]

    @property
    def quota(self) -> quota_pb2_grpc.QuotaServiceAsyncStub:
        return quota_pb2_grpc.QuotaServiceStub(self.channel)  # type: ignore[return-value]


class AsAdmin(grpc.aio.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Gives calls without a token an administrator's, for setting up."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = metadata

    async def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        details = grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*self._metadata),
            details.credentials,
            details.wait_for_ready,
        )
        return await continuation(details, request)
