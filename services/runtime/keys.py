"""The keys tokens are signed and checked with: asymmetric only (ES256 on
P-256, RS256 on RSA of 2048 bits or more), through `cryptography`.

Public keys live in a directory, one PEM file per key, named after its key
id: `<kid>.pem`. A Kubernetes Secret mounted as a volume is exactly that,
and rotating a key is adding its file, moving the issuer over, then
removing the old file; the ring reads the directory again every
`REREAD_SECONDS`, so no restart is needed.

Service keys: a service signs its calls to the others with its own private
key, `service-<name>.key` in the service keys directory, whose public half
is `service-<name>.pem` among the trusted keys. While a service key
rotates, the new pair is `service-<name>.<version>` and both public halves
are trusted; the service signs with the last of its keys in name order. A
token signed with a `service-` key is only good for that service's own
identity (auth.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import PrivateKeyTypes, PublicKeyTypes

from services.runtime.errors import ConfigError

REREAD_SECONDS = 30.0
SERVICE_KID_PREFIX = "service-"
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey


@dataclass(frozen=True)
class VerifyingKey:
    kid: str
    key: PublicKey
    algorithm: str  # ES256 or RS256


@dataclass(frozen=True)
class SigningKey:
    kid: str
    key: PrivateKey
    algorithm: str


def service_of(kid: str) -> str:
    """The service a `service-` key belongs to: service-matcher.2027 -> matcher."""
    return kid.removeprefix(SERVICE_KID_PREFIX).split(".", 1)[0]


def algorithm_of(key: PublicKeyTypes | PrivateKeyTypes, where: str) -> str:
    """ES256 or RS256 for a key we accept; ConfigError naming `where` otherwise."""
    if isinstance(key, ec.EllipticCurvePublicKey | ec.EllipticCurvePrivateKey):
        if isinstance(key.curve, ec.SECP256R1):
            return "ES256"
        raise ConfigError(where, "EC keys must be on P-256 (ES256)")
    if isinstance(key, rsa.RSAPublicKey | rsa.RSAPrivateKey):
        if key.key_size >= 2048:
            return "RS256"
        raise ConfigError(where, "RSA keys must have 2048 bits or more (RS256)")
    raise ConfigError(where, "only EC P-256 (ES256) and RSA (RS256) keys are accepted")


def load_public_keys(directory: Path) -> dict[str, VerifyingKey]:
    """Every `<kid>.pem` public key in `directory`, by key id."""
    found = {}
    for path in sorted(directory.glob("*.pem")):
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (OSError, ValueError):
            raise ConfigError(str(path), "is not a readable PEM public key") from None
        algorithm = algorithm_of(key, str(path))
        assert isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey)
        found[path.stem] = VerifyingKey(path.stem, key, algorithm)
    return found


def load_signing_key(path: Path) -> SigningKey:
    """A PEM private key; its key id is the file's name without `.key`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError):
        raise ConfigError(str(path), "is not a readable, unencrypted PEM private key") from None
    algorithm = algorithm_of(key, str(path))
    assert isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey)
    return SigningKey(path.stem, key, algorithm)


def generate(directory: Path, kid: str) -> tuple[Path, Path]:
    """A new P-256 key pair: `<kid>.key` (private, mode 0600) and `<kid>.pem`."""
    directory.mkdir(parents=True, exist_ok=True)
    private = ec.generate_private_key(ec.SECP256R1())
    secret, public = directory / f"{kid}.key", directory / f"{kid}.pem"
    secret.touch(mode=0o600)
    secret.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return secret, public


class KeyRing:
    """The trusted public keys, read from their directory again now and then."""

    def __init__(self, directory: Path | None) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        self._keys = load_public_keys(directory) if directory and directory.is_dir() else {}
        self._read_at = time.monotonic()

    def keys(self) -> dict[str, VerifyingKey]:
        if self._directory is not None and time.monotonic() - self._read_at > REREAD_SECONDS:
            with self._lock:
                if time.monotonic() - self._read_at > REREAD_SECONDS:
                    self._read_at = time.monotonic()
                    try:
                        if self._directory.is_dir():
                            self._keys = load_public_keys(self._directory)
                    except ConfigError:
                        pass  # a half-written rotation: keep the keys we had
        return self._keys
