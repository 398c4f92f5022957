"""`eapctl token`: keys and development tokens.

`data-key` prints a new key for the directory's EAP_DATA_KEYS_FILE;
`audit-key` one for the audit trails' EAP_AUDIT_KEYS_FILE.

`keygen KID` writes a P-256 key pair, `KID.key` (private) and `KID.pem`
(public), for the Secrets that hold the trusted keys and the services' own
keys (`service-matcher`, `service-calendar`).

`mint` signs a token for local use, with the development key kept in
var/dev-keys (made on first use), which a development server trusts. It
refuses to run unless EAP_AUTH_MODE=dev: production tokens come from the
county's identity provider, never from this tool.
"""

from __future__ import annotations

import argparse
import base64
import secrets
import sys
import time
from pathlib import Path

import jwt
from cryptography.fernet import Fernet

from services.runtime import keys
from services.runtime.auth import Role
from services.runtime.config import DEV_KEYS_DIR, Settings

DEV_KID = "dev"


def ensure_dev_key(settings: Settings) -> Path:
    """The development signing key, made on first use."""
    directory = Path(settings.jwt_keys_dir or DEV_KEYS_DIR)
    if not (directory / f"{DEV_KID}.key").exists():
        keys.generate(directory, DEV_KID)
    return directory / f"{DEV_KID}.key"


def mint(settings: Settings, role: Role, subject: str, minutes: int) -> str:
    signing = keys.load_signing_key(ensure_dev_key(settings))
    now = int(time.time())
    claims = {
        "sub": subject,
        "role": role.value,
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "iat": now,
        "exp": now + minutes * 60,
    }
    return jwt.encode(claims, signing.key, algorithm=signing.algorithm, headers={"kid": DEV_KID})


def main(argv: list[str], settings: Settings) -> int:
    parser = argparse.ArgumentParser(prog="eapctl token", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    minting = commands.add_parser("mint", help="a development token (EAP_AUTH_MODE=dev only)")
    minting.add_argument("--role", required=True, choices=[r.value for r in Role])
    minting.add_argument("--subject", required=True, help="pseudonymous id: the token's `sub`")
    minting.add_argument(
        "--minutes",
        type=int,
        default=60,
        help="lifetime (default 60, at most EAP_JWT_MAX_LIFETIME_SECONDS)",
    )
    commands.add_parser("data-key", help="a new Fernet key for EAP_DATA_KEYS_FILE")
    commands.add_parser("audit-key", help="a new HMAC key for EAP_AUDIT_KEYS_FILE")
    keygen = commands.add_parser("keygen", help="a P-256 key pair: KID.key and KID.pem")
    keygen.add_argument("kid", help="the key id, e.g. service-matcher or idp-2027-01")
    keygen.add_argument("--dir", default=".", help="where to write them (default: here)")
    args = parser.parse_args(argv)
    if args.command == "data-key":
        print(Fernet.generate_key().decode())
        return 0
    if args.command == "audit-key":
        print(base64.urlsafe_b64encode(secrets.token_bytes(32)).decode())
        return 0
    if args.command == "keygen":
        secret, public = keys.generate(Path(args.dir), args.kid)
        print(f"private key: {secret} (keep it in a Secret)\npublic key:  {public}")
        return 0
    if settings.auth_mode != "dev":
        print(
            "eapctl token mint: refused: only for development (EAP_AUTH_MODE=dev); "
            "production tokens come from the identity provider",
            file=sys.stderr,
        )
        return 2
    if args.role == Role.SERVICE.value:
        print("eapctl token mint: services sign their own tokens", file=sys.stderr)
        return 2
    # A longer token would be refused by every service (auth.py).
    longest = settings.jwt_max_lifetime_seconds // 60
    if args.minutes > longest:
        print(
            f"eapctl token mint: lifetime cut to {longest} minutes (EAP_JWT_MAX_LIFETIME_SECONDS)",
            file=sys.stderr,
        )
    print(mint(settings, Role(args.role), args.subject, max(1, min(args.minutes, longest))))
    return 0
